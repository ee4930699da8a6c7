/** Encrypts values before they enter an event (node TLS keys, SSH passwords). */
export interface SecretBox {
  /** Returns an opaque, authenticated ciphertext string. */
  seal(plaintext: string): string;
  /** Throws SecretTamperedError when the ciphertext was changed or sealed with another key. */
  open(sealed: string): string;
  /** A key for another purpose (token signing), derived from the master key. */
  deriveKey(purpose: string): Buffer;
}

export class SecretTamperedError extends Error {
  constructor() {
    super('secret could not be decrypted: tampered, truncated or sealed with another master key');
    this.name = 'SecretTamperedError';
  }
}
