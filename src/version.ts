/** Butler's version, reported in logs, metrics and `--version`. */
export const VERSION = "0.1.0";
