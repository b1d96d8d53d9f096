/**
 * An error the emulator answers over HTTP, in Dodo's error shape `{ code, message }`, so the
 * `dodopayments` SDK raises its matching class (`NotFoundError` for 404,
 * `UnprocessableEntityError` for 422, …).
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** 404, as Dodo answers for an id that does not exist. */
export function notFound(what: string, id: string): ApiError {
  return new ApiError(404, 'NOT_FOUND', `${what} ${JSON.stringify(id)} not found.`);
}

/** 422: the body is well-formed JSON but breaks a documented rule. */
export function invalid(message: string): ApiError {
  return new ApiError(422, 'INVALID_REQUEST_PARAMETERS', message);
}

/** 400: a business rule refuses the request (e.g. a debit larger than the balance). */
export function badRequest(code: string, message: string): ApiError {
  return new ApiError(400, code, message);
}

/** Thrown by the emulator's admin methods when a test passes something that cannot be right. */
export class DodoEmulatorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DodoEmulatorError';
  }
}
