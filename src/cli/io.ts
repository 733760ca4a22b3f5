// Where a command writes, and whether that is a terminal. Colour and tables only on a TTY (and never with
// NO_COLOR); pipes get plain, stable text.
export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  isTTY: boolean;
  color: boolean;
  env: NodeJS.ProcessEnv;
  /** Set by a command's action; the process exits with it. */
  exitCode: number;
}

export function processIo(): CliIo {
  const isTTY = process.stdout.isTTY === true;
  // A closed pipe (`clusterip-ha events | head`, `demo | tee` after Ctrl-C) ends the command quietly, as every
  // Unix tool does: output stops, a command waiting for a signal stops the way SIGTERM stops it (cleaning up what
  // it started), and one that is already stopping or finishing goes on to its end.
  let closed = false;
  for (const s of [process.stdout, process.stderr])
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      if (closed) return;
      closed = true;
      if (process.listenerCount('SIGTERM') > 0) process.emit('SIGTERM', 'SIGTERM');
    });
  return {
    out: (s) => void (closed || process.stdout.write(s)),
    err: (s) => void (closed || process.stderr.write(s)),
    isTTY,
    color: isTTY && !process.env.NO_COLOR && process.env.TERM !== 'dumb',
    env: process.env,
    exitCode: 0,
  };
}

const codes = { red: 31, green: 32, yellow: 33, blue: 34, dim: 2, bold: 1 } as const;
export type Colour = keyof typeof codes;

export function paint(io: Pick<CliIo, 'color'>, c: Colour, s: string): string {
  return io.color ? `\u001b[${codes[c]}m${s}\u001b[0m` : s;
}
