import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';

interface Image {
  id: string;
  name: string;
  address: string;
  vgpuSupported: boolean;
  listed: boolean;
}
interface Spec {
  id: string;
  name: string;
  vgpuSupported: boolean;
  listed: boolean;
}
type ErrorBody = { error: { code: string; fields?: Record<string, string> } };

const cpuSpec = { name: 'CPU 4C8G', cpuCores: 4, memoryGb: 8, systemDiskGb: 50, dataDiskGb: 100, pricePerHour: 0.35 };
const gpuSpec = { name: 'A100 ×1', gpuModel: 'NVIDIA A100', gpuCount: 1, gpuMemoryGb: 80, cpuCores: 16, memoryGb: 128, pricePerHour: 12.5 };
const vgpuSpec = { name: 'A100 20G 切片', gpuModel: 'NVIDIA A100', gpuCount: 1, gpuMemoryGb: 20, vgpuSupported: true, cpuCores: 4, memoryGb: 32, pricePerHour: 3.25 };

describe('catalog: images and specs', () => {
  let t: TestApp;
  let admin: string;
  let user: string;
  beforeAll(async () => {
    t = await startTestApp();
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'lab', password: 'lab-password' } });
    user = await t.login('lab', 'lab-password');
  });
  afterAll(() => t.stop());

  it('creates an image with the seed defaults (vGPU off, listed) and lists images by name', async () => {
    const created = await t.api<Image>('POST', '/api/v1/images', { token: admin, body: { name: 'PyTorch 2.4', address: 'nvcr.io/nvidia/pytorch:24.08-py3' } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ vgpuSupported: false, listed: true, description: '', source: '', remark: '' });
    await t.api('POST', '/api/v1/images', { token: admin, body: { name: 'CUDA base', address: 'nvidia/cuda:12.4.1-base-ubuntu22.04', vgpuSupported: true } });
    const list = await t.api<Image[]>('GET', '/api/v1/images', { token: admin });
    expect(list.body.map((i) => i.name)).toEqual(['CUDA base', 'PyTorch 2.4']);
    expect((await t.api<Image[]>('GET', '/api/v1/images?q=torch', { token: admin })).body.map((i) => i.name)).toEqual(['PyTorch 2.4']);
  });

  it('accepts every form of a Docker image reference and rejects what is not one', async () => {
    for (const address of ['busybox', 'library/ubuntu:22.04', 'localhost:5000/lab/tf:2.15-gpu', 'registry.cn-hangzhou.aliyuncs.com/ns/img@sha256:' + 'a'.repeat(64)]) {
      expect((await t.api('POST', '/api/v1/images', { token: admin, body: { name: `ok ${address}`.slice(0, 60), address } })).status, address).toBe(201);
    }
    for (const address of ['', 'Upper/Case', 'has space', 'x:', ':tag', 'a'.repeat(256), 'img:bad tag', 'img@sha256:short']) {
      const r = await t.api<ErrorBody>('POST', '/api/v1/images', { token: admin, body: { name: 'bad', address } });
      expect(r.status, address).toBe(400);
      expect(r.body.error.fields).toHaveProperty('address');
    }
  });

  it('answers each bad image field with 400 naming it', async () => {
    const r = await t.api<ErrorBody>('POST', '/api/v1/images', {
      token: admin,
      body: { name: '', address: 'busybox', vgpuSupported: 'yes', listed: 1, remark: 'a\u0000b', description: 'x'.repeat(2001), colour: 'red' },
    });
    expect(r.status).toBe(400);
    expect(Object.keys(r.body.error.fields!).sort()).toEqual(['colour', 'description', 'listed', 'name', 'remark', 'vgpuSupported']);
  });

  it('shows users listed images only, and hides an unlisted one from them', async () => {
    const hidden = await t.api<Image>('POST', '/api/v1/images', { token: admin, body: { name: 'internal', address: 'lab/internal:1', listed: false } });
    expect((await t.api<Image[]>('GET', '/api/v1/images', { token: user })).body.some((i) => i.id === hidden.body.id)).toBe(false);
    expect((await t.api('GET', `/api/v1/images/${hidden.body.id}`, { token: user })).status).toBe(404);
    expect((await t.api('GET', `/api/v1/images/${hidden.body.id}`, { token: admin })).status).toBe(200);
    const shown = await t.api<Image>('PATCH', `/api/v1/images/${hidden.body.id}`, { token: admin, body: { listed: true } });
    expect(shown.body.listed).toBe(true);
    expect((await t.api('GET', `/api/v1/images/${hidden.body.id}`, { token: user })).status).toBe(200);
  });

  it('keeps catalog writes for admins: a user gets 403 and nothing changes', async () => {
    const before = await t.app.eventStore.headPosition();
    expect((await t.api('POST', '/api/v1/images', { token: user, body: { name: 'x', address: 'busybox' } })).status).toBe(403);
    expect((await t.api('POST', '/api/v1/specs', { token: user, body: cpuSpec })).status).toBe(403);
    const image = (await t.api<Image[]>('GET', '/api/v1/images', { token: user })).body[0]!;
    expect((await t.api('PATCH', `/api/v1/images/${image.id}`, { token: user, body: { name: 'mine' } })).status).toBe(403);
    expect((await t.api('DELETE', `/api/v1/images/${image.id}`, { token: user })).status).toBe(403);
    expect(await t.app.eventStore.headPosition()).toBe(before);
  });

  it('creates CPU-only, GPU and vGPU specs, and filters specs by what an image can run', async () => {
    const cpu = await t.api<Spec>('POST', '/api/v1/specs', { token: admin, body: cpuSpec });
    expect(cpu).toMatchObject({ status: 201, body: { gpuCount: 0, gpuModel: '', vgpuSupported: false, listed: true } });
    expect((await t.api('POST', '/api/v1/specs', { token: admin, body: gpuSpec })).status).toBe(201);
    expect((await t.api('POST', '/api/v1/specs', { token: admin, body: vgpuSpec })).status).toBe(201);
    const images = (await t.api<Image[]>('GET', '/api/v1/images', { token: admin })).body;
    const plain = images.find((i) => !i.vgpuSupported)!;
    const sliced = images.find((i) => i.vgpuSupported)!;
    const forPlain = (await t.api<Spec[]>('GET', `/api/v1/specs?imageId=${plain.id}`, { token: user })).body;
    expect(forPlain.map((s) => s.name)).toEqual(['A100 ×1', 'CPU 4C8G']);
    const forSliced = (await t.api<Spec[]>('GET', `/api/v1/specs?imageId=${sliced.id}`, { token: user })).body;
    expect(forSliced.map((s) => s.name)).toEqual(['A100 20G 切片', 'A100 ×1', 'CPU 4C8G']);
    expect((await t.api('GET', '/api/v1/specs?imageId=nope', { token: user })).status).toBe(404);
  });

  it('answers every broken spec rule with 400 naming the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ ...cpuSpec, gpuCount: 1, gpuMemoryGb: 80 }, 'gpuModel'],
      [{ ...cpuSpec, gpuCount: 1, gpuModel: 'A100' }, 'gpuMemoryGb'],
      [{ ...cpuSpec, vgpuSupported: true }, 'vgpuSupported'],
      [{ ...cpuSpec, cpuCores: -1 }, 'cpuCores'],
      [{ ...cpuSpec, cpuCores: 2.5 }, 'cpuCores'],
      [{ ...cpuSpec, memoryGb: 10_000_000 }, 'memoryGb'],
      [{ ...cpuSpec, systemDiskGb: -5 }, 'systemDiskGb'],
      [{ ...cpuSpec, dataDiskGb: 'big' }, 'dataDiskGb'],
      [{ ...cpuSpec, pricePerHour: 1.23456 }, 'pricePerHour'],
      [{ ...cpuSpec, pricePerHour: -1 }, 'pricePerHour'],
      [{ ...cpuSpec, gpuCount: 99, gpuModel: 'A100', gpuMemoryGb: 80 }, 'gpuCount'],
      [{ ...cpuSpec, name: '' }, 'name'],
      [{ ...cpuSpec, listed: 'no' }, 'listed'],
    ];
    for (const [body, field] of cases) {
      const r = await t.api<ErrorBody>('POST', '/api/v1/specs', { token: admin, body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.fields, JSON.stringify(body)).toHaveProperty(field);
    }
    const spec = (await t.api<Spec[]>('GET', '/api/v1/specs?q=cpu', { token: admin })).body[0]!;
    const bad = await t.api<ErrorBody>('PATCH', `/api/v1/specs/${spec.id}`, { token: admin, body: { gpuCount: 2 } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.fields).toHaveProperty('gpuModel');
  });

  it('hides unlisted specs from users and deletes specs and images', async () => {
    const spec = await t.api<Spec>('POST', '/api/v1/specs', { token: admin, body: { ...cpuSpec, name: 'hidden spec', listed: false } });
    expect((await t.api<Spec[]>('GET', '/api/v1/specs', { token: user })).body.some((s) => s.id === spec.body.id)).toBe(false);
    expect((await t.api('GET', `/api/v1/specs/${spec.body.id}`, { token: user })).status).toBe(404);
    expect((await t.api('DELETE', `/api/v1/specs/${spec.body.id}`, { token: admin })).status).toBe(204);
    expect((await t.api('GET', `/api/v1/specs/${spec.body.id}`, { token: admin })).status).toBe(404);
    expect((await t.api('DELETE', `/api/v1/specs/${spec.body.id}`, { token: admin })).status).toBe(404);
  });

  it('refuses to delete a spec or image a live instance uses (409 IN_USE) but allows unlisting it', async () => {
    const spec = await t.api<Spec>('POST', '/api/v1/specs', { token: admin, body: { ...cpuSpec, name: 'in use' } });
    // The instance slice projects instances into this collection; one live instance uses the spec.
    await t.app.readStore.collection('instances').put({ id: 'inst-1', specId: spec.body.id, imageId: 'x', nodeId: 'y' } as { id: string }, 1);
    const r = await t.api<ErrorBody>('DELETE', `/api/v1/specs/${spec.body.id}`, { token: admin });
    expect(r).toMatchObject({ status: 409, body: { error: { code: 'IN_USE' } } });
    expect((await t.api('PATCH', `/api/v1/specs/${spec.body.id}`, { token: admin, body: { listed: false } })).status).toBe(200);
  });

  it('documents every catalog route in the OpenAPI document', async () => {
    const doc = await t.api<{ openapi: string; paths: Record<string, Record<string, unknown>> }>('GET', '/api/openapi.json');
    expect(doc.body.openapi).toBe('3.1.0');
    for (const path of ['/api/v1/images', '/api/v1/images/{id}', '/api/v1/specs', '/api/v1/specs/{id}', '/api/v1/nodes', '/api/v1/nodes/{id}', '/api/v1/nodes/{id}/test']) {
      expect(doc.body.paths, path).toHaveProperty([path]);
    }
    expect(JSON.stringify(doc.body.paths['/api/v1/nodes']!.post)).toContain('tlsKey');
    expect(JSON.stringify((doc.body.paths['/api/v1/nodes']!.get as { responses: object }).responses)).not.toContain('tlsKey');
  });
});
