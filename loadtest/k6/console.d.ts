// k6 gives scripts a console (log, info, warn, error, debug: grafana k6 docs, "console"), which
// @types/k6 does not declare; this declares exactly that much rather than the browser's whole DOM.
declare const console: {
  log(...data: unknown[]): void;
  info(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
  debug(...data: unknown[]): void;
};
