// Running the TypeScript sources directly (tsx: the example, the benchmark) needs `.lua` imports
// loaded as text, which the published build inlines. Use: `tsx --import ./tools/register-lua.mjs …`.
import { register } from 'node:module';

register('./lua-hooks.mjs', import.meta.url);
