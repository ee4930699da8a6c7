import pino, { type Logger } from 'pino';

/** Field names that must never reach a log line, at any depth we log. */
const SECRET_FIELDS = [
  'password', 'currentPassword', 'newPassword', 'passwordHash', 'token', 'authorization', 'tlsKey',
  'sshPassword', 'secret', 'masterKey', 'privateKey', 'cookie',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const paths = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]);
  return pino(
    {
      level,
      base: { app: 'tianqi' },
      redact: { paths: [...paths, 'req.headers.authorization', 'req.headers.cookie'], censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
