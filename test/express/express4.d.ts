// Express 4, installed as the devDependency `express4`; its API is typed by @types/express (5), close enough for the suites.
declare module 'express4' {
  import express from 'express';
  export default express;
}
