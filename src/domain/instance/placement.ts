import { modelMatches } from '../catalog/gpu-inventory.ts';
/**
 * Placement: a pure function over the nodes' capacity ledgers. It decides which node and which
 * card indices an instance gets; the node stream then records the reservation with its expected
 * revision, so two concurrent placements cannot both take the last card.
 */

export interface ResourceRequest {
  /** 0 = CPU-only: GPU fields are ignored. */
  readonly gpuCount: number;
  /** Whole cards: the card's memory; vGPU: the slice taken on each card. */
  readonly gpuMemoryGb: number;
  readonly vgpu: boolean;
  readonly gpuModel: string;
  readonly cpuCores: number;
  readonly memoryGb: number;
  readonly dataDiskGb: number;
  /** Host ports to map public service ports to; absent = none. */
  readonly publicPorts?: number;
}

/** A node's public port range, and the host ports reservations hold in it (or held, outside a narrowed range). */
export interface HostPortLedger {
  readonly min: number;
  readonly max: number;
  readonly taken: ReadonlySet<number>;
}

export interface CardLedger {
  readonly index: number;
  /** A discovered card's own model; absent: the node's (declared) model. */
  readonly model?: string;
  readonly totalMemoryGb: number;
  /** Memory taken by vGPU slices on this card. */
  readonly slicedMemoryGb: number;
  /** Taken whole by a normal GPU instance. */
  readonly whole: boolean;
}

export interface NodeLedger {
  readonly nodeId: string;
  readonly name: string;
  readonly listed: boolean;
  readonly connected: boolean;
  readonly gpuModel: string;
  readonly cards: readonly CardLedger[];
  /** null = not limited (unknown capacity). */
  readonly cpuCores: number | null;
  readonly memoryGb: number | null;
  readonly dataDiskGb: number | null;
  readonly usedCpuCores: number;
  readonly usedMemoryGb: number;
  readonly usedDataDiskGb: number;
  /** false: HAMi-core is known to be missing on the node, so no vGPU slice goes there (absent or true: it may). */
  readonly vgpuReady?: boolean;
  readonly hostPorts: HostPortLedger;
}

export type PlacementPolicy = 'binpack' | 'spread';

export interface Placement {
  readonly nodeId: string;
  /** Granted cards, in order; each with the memory taken on it. */
  readonly gpus: readonly { index: number; memoryGb: number }[];
  /** Free host ports for the public service ports, lowest first; empty when none are asked for. */
  readonly hostPorts: readonly number[];
}

export interface Candidate {
  readonly nodeId: string;
  readonly name: string;
  /** Cards this request could use, with each card's free memory (单卡显存). */
  readonly cards: readonly { index: number; totalMemoryGb: number; freeMemoryGb: number; whole: boolean }[];
  readonly freeCpuCores: number | null;
  readonly freeMemoryGb: number | null;
  readonly freeDataDiskGb: number | null;
  /** Ports left in the node's public port range. */
  readonly freePublicPorts: number;
}

export function freeMemory(card: CardLedger): number {
  return card.whole ? 0 : card.totalMemoryGb - card.slicedMemoryGb;
}

/** The spec's model names the card's: "A100" names `NVIDIA A100-SXM4-80GB` (see `modelMatches`). */
const sameModel = (spec: string, card: string) => spec.trim().toLowerCase() === card.trim().toLowerCase() || modelMatches(spec, card);
const fits = (capacity: number | null, used: number, wanted: number) => capacity === null || used + wanted <= capacity;

/** The cards of `node` this request could take, best first for the policy; null when too few. */
function usableCards(request: ResourceRequest, node: NodeLedger, policy: PlacementPolicy): CardLedger[] | null {
  if (request.gpuCount === 0) return [];
  // A discovered card has its own model (a mixed node has several); a declared one, the node's.
  const cards = node.cards.filter((card) => sameModel(request.gpuModel, card.model ?? node.gpuModel) && usable(request, card));
  if (cards.length < request.gpuCount) return null;
  if (request.vgpu) {
    // binpack: fill cards that already carry slices, so whole cards stay free; spread: the emptiest first.
    const sign = policy === 'binpack' ? 1 : -1;
    cards.sort((a, b) => sign * (freeMemory(a) - freeMemory(b)) || a.index - b.index);
  }
  return cards;
}

/** Whether `node` can take the request at all (listed, connected, model, cards, CPU, memory, disk). */
function eligible(request: ResourceRequest, node: NodeLedger): boolean {
  return (
    node.listed &&
    node.connected &&
    !(request.vgpu && request.gpuCount > 0 && node.vgpuReady === false) &&
    fits(node.cpuCores, node.usedCpuCores, request.cpuCores) &&
    fits(node.memoryGb, node.usedMemoryGb, request.memoryGb) &&
    fits(node.dataDiskGb, node.usedDataDiskGb, request.dataDiskGb) &&
    (!request.publicPorts || freeHostPorts(node.hostPorts) >= request.publicPorts)
  );
}

/** How many ports of the range no reservation holds. */
export function freeHostPorts(ports: HostPortLedger): number {
  let taken = 0;
  for (const port of ports.taken) if (port >= ports.min && port <= ports.max) taken++;
  return Math.max(0, ports.max - ports.min + 1 - taken);
}

/** The lowest `count` free ports of the range. */
function chooseHostPorts(ports: HostPortLedger, count: number): number[] {
  const chosen: number[] = [];
  for (let port = ports.min; port <= ports.max && chosen.length < count; port++) if (!ports.taken.has(port)) chosen.push(port);
  return chosen;
}

/** Every node that fits, with its usable cards (for `GET /placements`), sorted by name. */
export function candidates(request: ResourceRequest, nodes: readonly NodeLedger[]): Candidate[] {
  const out: Candidate[] = [];
  for (const node of nodes) {
    if (!eligible(request, node)) continue;
    const cards = usableCards(request, node, 'binpack');
    if (!cards) continue;
    out.push({
      nodeId: node.nodeId,
      name: node.name,
      cards: [...cards].sort((a, b) => a.index - b.index).map((c) => ({ index: c.index, totalMemoryGb: c.totalMemoryGb, freeMemoryGb: freeMemory(c), whole: c.whole })),
      freeCpuCores: node.cpuCores === null ? null : node.cpuCores - node.usedCpuCores,
      freeMemoryGb: node.memoryGb === null ? null : node.memoryGb - node.usedMemoryGb,
      freeDataDiskGb: node.dataDiskGb === null ? null : node.dataDiskGb - node.usedDataDiskGb,
      freePublicPorts: freeHostPorts(node.hostPorts),
    });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Chooses a node and cards. `binpack` (default) fills the busiest node that fits, to keep whole
 * nodes and cards free for large requests; `spread` the emptiest. Ties go to the node name, so
 * the same ledgers always give the same answer. null when nothing fits.
 */
export function place(request: ResourceRequest, nodes: readonly NodeLedger[], policy: PlacementPolicy = 'binpack'): Placement | null {
  // One pass without allocations (this runs over every node of a fleet per create); cards are
  // chosen only for the winner.
  // A fleet has a handful of models: each is matched against the request once.
  const matched = new Map<string, boolean>();
  const names = (model: string) => {
    let hit = matched.get(model);
    if (hit === undefined) matched.set(model, (hit = sameModel(request.gpuModel, model)));
    return hit;
  };
  let best: NodeLedger | null = null;
  let bestScore = 0;
  for (const node of nodes) {
    if (!eligible(request, node)) continue;
    if (request.gpuCount > 0 && countUsable(request, node, names) < request.gpuCount) continue;
    // How loaded the node is, as a share of its GPU memory (or CPU for CPU-only).
    const score = load(node, request);
    const better =
      best === null ||
      (policy === 'binpack' ? score > bestScore : score < bestScore) ||
      (score === bestScore && node.name < best.name);
    if (better) {
      best = node;
      bestScore = score;
    }
  }
  if (!best) return null;
  const cards = usableCards(request, best, policy)!;
  return {
    nodeId: best.nodeId,
    gpus: cards.slice(0, request.gpuCount).map((card) => ({
      index: card.index,
      memoryGb: request.vgpu ? request.gpuMemoryGb : card.totalMemoryGb,
    })),
    hostPorts: chooseHostPorts(best.hostPorts, request.publicPorts ?? 0),
  };
}

/**
 * A discovered card's memory is what nvidia-smi reports (a "48 GB" A40 reports 46068 MiB, 45 GiB):
 * a whole-card spec written with the card's sold size still fits it, within a tenth.
 */
const DISCOVERED_MEMORY_SLACK = 0.9;

function usable(request: ResourceRequest, card: CardLedger): boolean {
  if (request.vgpu) return !card.whole && freeMemory(card) >= request.gpuMemoryGb;
  const needed = card.model !== undefined ? request.gpuMemoryGb * DISCOVERED_MEMORY_SLACK : request.gpuMemoryGb;
  return !card.whole && card.slicedMemoryGb === 0 && card.totalMemoryGb >= needed;
}

function countUsable(request: ResourceRequest, node: NodeLedger, names: (model: string) => boolean): number {
  let count = 0;
  for (const card of node.cards) if (names(card.model ?? node.gpuModel) && usable(request, card)) count++;
  return count;
}

function load(node: NodeLedger, request: ResourceRequest): number {
  if (request.gpuCount > 0) {
    let total = 0;
    let used = 0;
    for (const c of node.cards) {
      total += c.totalMemoryGb;
      used += c.whole ? c.totalMemoryGb : c.slicedMemoryGb;
    }
    return total === 0 ? 0 : used / total;
  }
  return node.cpuCores ? node.usedCpuCores / node.cpuCores : node.memoryGb ? node.usedMemoryGb / node.memoryGb : 0;
}
