// Express 4, installed as `express4` to test the peer range, has the same API as the typed v5.
declare module 'express4' {
  import express = require('express');
  export = express;
}
