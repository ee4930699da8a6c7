import { describe, expect, it } from 'vitest';
import type { Plugin, PluginContext } from '../../src/plugins/plugin-host.ts';
import type { RecordedEvent } from '../../src/ports/event-store.port.ts';
import { waitUntil } from '../contract/event-store.contract.ts';
import { ADMIN_PASSWORD, startTestApp } from '../support/app.ts';

function recordingPlugin(name: string) {
  const seen: RecordedEvent[] = [];
  let context: PluginContext | undefined;
  let stopped = false;
  const plugin: Plugin = {
    name,
    async start(ctx) {
      context = ctx;
      const sub = ctx.events$.subscribe((e) => seen.push(e));
      return {
        async stop() {
          sub.unsubscribe();
          stopped = true;
        },
      };
    },
  };
  return { plugin, seen, context: () => context, stopped: () => stopped };
}

describe('plugin host', () => {
  it('gives a plugin the live event stream, the read store and config, and stops it on shutdown', async () => {
    const audit = recordingPlugin('audit-test');
    const t = await startTestApp({}, { plugins: [audit.plugin] });
    try {
      const admin = await t.login('admin', ADMIN_PASSWORD);
      await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'pluggy', password: 'pluggy-pass' } });
      await waitUntil(() => audit.seen.some((e) => e.type === 'UserRegistered'));
      // only live events: the bootstrap admin was registered before the plugin started
      expect(audit.seen.filter((e) => e.type === 'UserRegistered')).toHaveLength(1);
      expect(audit.context()!.config.httpPort).toBe(0);
      expect(await audit.context()!.readStore.collection('users').count()).toBe(2);
    } finally {
      await t.stop();
    }
    expect(audit.stopped()).toBe(true);
  });

  it('does not start a plugin switched off in config', async () => {
    const off = recordingPlugin('switched-off');
    const t = await startTestApp({ TIANQI_DISABLED_PLUGINS: 'switched-off, other' }, { plugins: [off.plugin] });
    await t.stop();
    expect(off.context()).toBeUndefined();
  });
});
