/**
 * Card discovery: what `nvidia-smi` says of a node's cards, read through the engine in a
 * short-lived container with the NVIDIA runtime (`GPU_QUERY`), and what the platform keeps of it
 * on the node's stream (inside the connection facts). A card seen before and missing now (fell off
 * the bus, driver reloaded) stays listed, unavailable: nothing new is placed on it.
 */
export interface DiscoveredGpu {
  readonly index: number;
  readonly uuid: string;
  /** As nvidia-smi names it: `NVIDIA A100-SXM4-80GB`, `NVIDIA GeForce RTX 4090`. */
  readonly model: string;
  /** Total memory, GiB rounded (nvidia-smi's MiB / 1024). */
  readonly memoryGb: number;
  readonly migMode: 'enabled' | 'disabled' | 'n/a';
  /** false: seen on an earlier read, not on the last one. */
  readonly available: boolean;
}

export interface GpuInventory {
  readonly cards: readonly DiscoveredGpu[];
  readonly driverVersion: string | null;
  readonly cudaVersion: string | null;
  /** Why the last read failed (the cards are then all unavailable), or null. */
  readonly error: string | null;
  /**
   * The engine has no NVIDIA device driver at all (no NVIDIA container toolkit): it cannot give a
   * container a card, so the form's cards are not placed on either.
   */
  readonly noDeviceDriver?: true;
}

/** What the probe container runs; `nvidia-smi` alone (no arguments) prints the CUDA version in its header. */
export const GPU_QUERY = ['--query-gpu=index,uuid,name,memory.total,driver_version,mig.mode.current', '--format=csv,noheader,nounits'] as const;

/** One line per card; null when the output is not that (an error message, a wedged driver). */
export function parseGpuQuery(stdout: string): { cards: DiscoveredGpu[]; driverVersion: string | null } | null {
  const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const cards: DiscoveredGpu[] = [];
  let driverVersion: string | null = null;
  for (const line of lines) {
    const fields = line.split(',').map((f) => f.trim());
    if (fields.length < 6) return null;
    const [index, uuid, model, memory, driver, mig] = fields as [string, string, string, string, string, string];
    const mib = Number(memory);
    if (!/^\d+$/.test(index) || !/^GPU-[0-9a-f-]+$/i.test(uuid) || !Number.isFinite(mib)) return null;
    driverVersion ??= driver;
    cards.push({
      index: Number(index),
      uuid,
      model,
      memoryGb: Math.round(mib / 1024),
      migMode: /^enabled$/i.test(mig) ? 'enabled' : /^disabled$/i.test(mig) ? 'disabled' : 'n/a',
      available: true,
    });
  }
  return cards.length > 0 ? { cards, driverVersion } : null;
}

/** `CUDA Version: 12.4` from nvidia-smi's header, or null. */
export function parseCudaVersion(header: string): string | null {
  return /CUDA Version:\s*([\d.]+)/.exec(header)?.[1] ?? null;
}

/**
 * The inventory after a read: the cards seen now, and those seen before but not now, unavailable.
 * A failed read keeps every known card, unavailable, with the reason.
 */
export function mergeInventory(
  previous: GpuInventory | null | undefined,
  read: { cards: readonly DiscoveredGpu[]; driverVersion: string | null; cudaVersion: string | null } | { error: string },
): GpuInventory {
  const before = previous?.cards ?? [];
  if ('error' in read) {
    return { cards: before.map((c) => ({ ...c, available: false })), driverVersion: previous?.driverVersion ?? null, cudaVersion: previous?.cudaVersion ?? null, error: read.error };
  }
  const seen = new Set(read.cards.map((c) => c.uuid));
  const gone = before.filter((c) => !seen.has(c.uuid)).map((c) => ({ ...c, available: false }));
  const cards = [...read.cards, ...gone].sort((a, b) => a.index - b.index || a.uuid.localeCompare(b.uuid));
  return { cards, driverVersion: read.driverVersion, cudaVersion: read.cudaVersion, error: null };
}

const words = (model: string) => model.toLowerCase().replace(/\b(nvidia|geforce|tesla)\b/g, ' ').split(/[^a-z0-9]+/).filter(Boolean);

/**
 * Whether a spec's GPU model names this card: its words in order within the card's, vendor words
 * aside — "A100" and "NVIDIA A100" name `NVIDIA A100-SXM4-80GB`, "RTX 4090" names `NVIDIA GeForce
 * RTX 4090`, "A10" does not name an A100.
 */
export function modelMatches(specModel: string, cardModel: string): boolean {
  const want = words(specModel);
  const have = words(cardModel);
  if (want.length === 0) return false;
  for (let start = 0; start + want.length <= have.length; start++) {
    if (want.every((w, i) => have[start + i] === w)) return true;
  }
  return false;
}
