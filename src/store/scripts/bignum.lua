-- Exact signed integers for money in Lua, whose numbers are doubles (exact only to 2^53, about
-- $9,007 at 10^-12 USD per unit). Values are decimal strings at the Redis boundary. Inside, a
-- value below 2^52 in magnitude (about $4,503) is a plain Lua number (exact, and the sum or
-- difference of two of them stays below 2^53, so it is exact too: the fast path, about three
-- times cheaper, which nearly every amount takes); a larger one is { sign = -1|0|1, limbs = { least significant first } } in
-- base 10^7, where a sum or difference of two limbs plus a carry stays far below 2^53. Every
-- operation takes either form and answers exactly.
-- Prepended to every script; everything is local (Redis forbids script globals).

local BIGNUM_BASE = 10000000
local BIGNUM_LIMB_DIGITS = 7
-- Magnitudes below 2^52 (about $4,503) are plain numbers: two of them add to less than 2^53.
local BIGNUM_SMALL = 4503599627370496

local function bignum_parse_limbs(text)
  if type(text) ~= 'string' then
    return error('bignum: expected an integer string, got ' .. type(text))
  end
  local sign, digits = string.match(text, '^(%-?)(%d+)$')
  if not digits then
    return error('bignum: not an integer string: ' .. text)
  end
  digits = string.gsub(digits, '^0+', '')
  local limbs = {}
  local last = #digits
  while last > 0 do
    local first = math.max(1, last - BIGNUM_LIMB_DIGITS + 1)
    limbs[#limbs + 1] = tonumber(string.sub(digits, first, last))
    last = first - 1
  end
  if #limbs == 0 then
    return { sign = 0, limbs = {} }
  end
  return { sign = (sign == '-') and -1 or 1, limbs = limbs }
end

local function bignum_parse(text)
  -- Up to 15 digits (and a sign): exact as a number.
  if type(text) == 'string' and #text <= 16 and string.find(text, '^%-?%d+$') then
    local value = tonumber(text)
    if value > -BIGNUM_SMALL and value < BIGNUM_SMALL then
      return value == 0 and 0 or value
    end
  end
  return bignum_parse_limbs(text)
end

-- A value in limbs, whichever form it is in.
local function bignum_limbs(value)
  if type(value) == 'number' then
    return bignum_parse_limbs(string.format('%.0f', value))
  end
  return value
end

-- -1, 0 or 1: the value's sign.
local function bignum_sign(value)
  if type(value) == 'number' then
    return (value > 0 and 1) or (value < 0 and -1) or 0
  end
  return value.sign
end

-- A missing Redis field (false or nil) reads as zero.
local function bignum_or_zero(text)
  if not text then
    return 0
  end
  return bignum_parse(text)
end

local function bignum_tostring(value)
  if type(value) == 'number' then
    if value == 0 then
      return '0'
    end
    return string.format('%.0f', value)
  end
  if value.sign == 0 then
    return '0'
  end
  local limbs = value.limbs
  local parts = { (value.sign < 0) and '-' or '', string.format('%d', limbs[#limbs]) }
  for index = #limbs - 1, 1, -1 do
    parts[#parts + 1] = string.format('%07d', limbs[index])
  end
  return table.concat(parts)
end

local function bignum_compare_magnitude(left, right)
  if #left ~= #right then
    return (#left < #right) and -1 or 1
  end
  for index = #left, 1, -1 do
    if left[index] ~= right[index] then
      return (left[index] < right[index]) and -1 or 1
    end
  end
  return 0
end

local function bignum_add_magnitude(left, right)
  local sum, carry = {}, 0
  for index = 1, math.max(#left, #right) do
    local limb = (left[index] or 0) + (right[index] or 0) + carry
    if limb >= BIGNUM_BASE then
      sum[index], carry = limb - BIGNUM_BASE, 1
    else
      sum[index], carry = limb, 0
    end
  end
  if carry > 0 then
    sum[#sum + 1] = carry
  end
  return sum
end

-- |left| - |right|, requiring |left| >= |right|.
local function bignum_subtract_magnitude(left, right)
  local difference, borrow = {}, 0
  for index = 1, #left do
    local limb = left[index] - (right[index] or 0) - borrow
    if limb < 0 then
      difference[index], borrow = limb + BIGNUM_BASE, 1
    else
      difference[index], borrow = limb, 0
    end
  end
  while #difference > 0 and difference[#difference] == 0 do
    difference[#difference] = nil
  end
  return difference
end

local function bignum_add_limbs(left, right)
  if left.sign == 0 then
    return right
  end
  if right.sign == 0 then
    return left
  end
  if left.sign == right.sign then
    return { sign = left.sign, limbs = bignum_add_magnitude(left.limbs, right.limbs) }
  end
  local order = bignum_compare_magnitude(left.limbs, right.limbs)
  if order == 0 then
    return { sign = 0, limbs = {} }
  end
  if order > 0 then
    return { sign = left.sign, limbs = bignum_subtract_magnitude(left.limbs, right.limbs) }
  end
  return { sign = right.sign, limbs = bignum_subtract_magnitude(right.limbs, left.limbs) }
end

local function bignum_add(left, right)
  if type(left) == 'number' and type(right) == 'number' then
    local sum = left + right
    if sum > -BIGNUM_SMALL and sum < BIGNUM_SMALL then
      return sum
    end
  end
  return bignum_add_limbs(bignum_limbs(left), bignum_limbs(right))
end

local function bignum_negate(value)
  if type(value) == 'number' then
    return value == 0 and 0 or -value
  end
  return { sign = -value.sign, limbs = value.limbs }
end

local function bignum_sub(left, right)
  return bignum_add(left, bignum_negate(right))
end

-- -1, 0 or 1 as left is less than, equal to or greater than right.
local function bignum_cmp(left, right)
  if type(left) == 'number' and type(right) == 'number' then
    return (left < right and -1) or (left > right and 1) or 0
  end
  left, right = bignum_limbs(left), bignum_limbs(right)
  if left.sign ~= right.sign then
    return (left.sign < right.sign) and -1 or 1
  end
  if left.sign == 0 then
    return 0
  end
  return left.sign * bignum_compare_magnitude(left.limbs, right.limbs)
end

-- Adds two integer strings and returns the sum as an integer string.
local function bignum_add_strings(left, right)
  return bignum_tostring(bignum_add(bignum_or_zero(left), bignum_or_zero(right)))
end

-- value × factor, for a whole factor below 10^8 (a seat count): each limb times the factor plus
-- the carry stays below 2^53.
local function bignum_mul_small(value, factor)
  if type(value) == 'number' then
    local product = value * factor
    if product > -BIGNUM_SMALL and product < BIGNUM_SMALL then
      return product == 0 and 0 or product
    end
    value = bignum_limbs(value)
  end
  if value.sign == 0 or factor == 0 then
    return { sign = 0, limbs = {} }
  end
  local limbs = {}
  local carry = 0
  for index = 1, #value.limbs do
    local product = value.limbs[index] * factor + carry
    limbs[index] = product % BIGNUM_BASE
    carry = math.floor(product / BIGNUM_BASE)
  end
  while carry > 0 do
    limbs[#limbs + 1] = carry % BIGNUM_BASE
    carry = math.floor(carry / BIGNUM_BASE)
  end
  return { sign = value.sign, limbs = limbs }
end
