import { defineStore } from 'pinia';
import { io, type Socket } from 'socket.io-client';
import { ref } from 'vue';
import type { ComputeNode, Instance, Stats } from '@/api/types.ts';

export type InstancePush = Instance | { id: string; deleted: true };
export type NodePush = ComputeNode | { id: string; deleted: true };
export type StatsPush = Stats & { instanceId: string };

type Handler<T> = (value: T) => void;

/**
 * The one `/live` socket of the signed-in session. Pages subscribe to `instance`, `node` and
 * `stats` pushes; `reconnected` tells them to reload what they may have missed while offline.
 */
export const useLiveStore = defineStore('live', () => {
  const connected = ref(false);
  const everConnected = ref(false);
  let socket: Socket | null = null;
  const handlers = {
    instance: new Set<Handler<InstancePush>>(),
    node: new Set<Handler<NodePush>>(),
    stats: new Set<Handler<StatsPush>>(),
    reconnected: new Set<Handler<void>>(),
  };
  const watched = new Map<string, number>();

  function connect(token: string, onRefused: () => void) {
    disconnect();
    const s = io('/live', { auth: { token }, reconnectionDelayMax: 5000 });
    socket = s;
    s.on('connect', () => {
      const again = everConnected.value;
      connected.value = true;
      everConnected.value = true;
      for (const id of watched.keys()) s.emit('watch-stats', { instanceId: id });
      if (again) for (const h of handlers.reconnected) h();
    });
    s.on('disconnect', () => {
      connected.value = false;
    });
    s.on('connect_error', (err: Error) => {
      connected.value = false;
      if (/UNAUTHORIZED/.test(err.message)) {
        s.disconnect();
        onRefused();
      }
    });
    s.on('instance', (value: InstancePush) => {
      for (const h of handlers.instance) h(value);
    });
    s.on('node', (value: NodePush) => {
      for (const h of handlers.node) h(value);
    });
    s.on('stats', (value: StatsPush) => {
      for (const h of handlers.stats) h(value);
    });
    // `error` pushes (NOT_RUNNING for stats of a stopped instance…) are expected; pages read state instead.
    s.on('error', () => undefined);
  }

  function disconnect() {
    socket?.removeAllListeners();
    socket?.disconnect();
    socket = null;
    connected.value = false;
    everConnected.value = false;
    watched.clear();
  }

  function on<K extends keyof typeof handlers>(event: K, handler: (typeof handlers)[K] extends Set<infer H> ? H : never): () => void {
    const set = handlers[event] as Set<typeof handler>;
    set.add(handler);
    return () => set.delete(handler);
  }

  /** Stats every 5 s for one instance, until the returned function is called. */
  function watchStats(instanceId: string): () => void {
    const count = (watched.get(instanceId) ?? 0) + 1;
    watched.set(instanceId, count);
    if (count === 1 && socket?.connected) {
      // A stats stream that ended (the container stopped) may still be registered on the server.
      socket.emit('unwatch-stats', { instanceId });
      socket.emit('watch-stats', { instanceId });
    }
    return () => {
      const left = (watched.get(instanceId) ?? 1) - 1;
      if (left > 0) {
        watched.set(instanceId, left);
        return;
      }
      watched.delete(instanceId);
      socket?.emit('unwatch-stats', { instanceId });
    };
  }

  return { connected, connect, disconnect, on, watchStats };
});
