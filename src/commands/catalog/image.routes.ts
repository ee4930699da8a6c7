import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { imageDecider, imageStream } from '../../domain/catalog/image.decider.ts';
import { NotFoundError } from '../../domain/shared/errors.ts';
import { reply, route, type Actor, type RouteSpec } from '../../http/route.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { IMAGES, type ImageView } from '../../projections/catalog.projection.ts';
import type { CommandBus } from '../command-bus.ts';
import { liveInstancesUsing } from './catalog-usage.ts';
import { MAX_IMAGE_SERVICE_PORTS } from '../../domain/instance/service-ports.ts';
import { catalogListQuery, imageReference, name, nameFilter, servicePorts, text } from './fields.ts';

const fields = {
  name,
  address: imageReference,
  description: text(2_000),
  source: text(255).meta({ description: 'where the image comes from (来源), e.g. NGC, Docker Hub, in-house' }),
  vgpuSupported: z.boolean().meta({ description: 'the image works with HAMi-core vGPU memory slicing' }),
  listed: z.boolean(),
  remark: text(2_000),
  ports: servicePorts(MAX_IMAGE_SERVICE_PORTS)
    .meta({ description: 'services the image runs (JupyterLab 8888, TensorBoard 6006…): links on each instance' }),
};
const CreateImage = z.strictObject({
  name: fields.name,
  address: fields.address,
  description: fields.description.default(''),
  source: fields.source.default(''),
  vgpuSupported: fields.vgpuSupported.default(false),
  listed: fields.listed.default(true),
  remark: fields.remark.default(''),
  ports: fields.ports.default([]),
});
const UpdateImage = z.strictObject(fields).partial();
export const ImageSchema = z.object({
  id: z.string(),
  ...fields,
  createdAt: z.string(),
  updatedAt: z.string(),
});

export function toImageDto(view: ImageView): z.infer<typeof ImageSchema> {
  const { id, name: n, address, description, source, vgpuSupported, listed, remark, ports, createdAt, updatedAt } = view;
  return { id, name: n, address, description, source, vgpuSupported, listed, remark, ports: (ports ?? []).map((p) => ({ ...p })), createdAt, updatedAt };
}

/** Images users may see: admins all, users listed ones only. */
export async function visibleImage(store: ReadStore, actor: Actor, id: string): Promise<ImageView> {
  const image = await store.collection<ImageView>(IMAGES).get(id);
  if (!image || (actor.role !== 'admin' && !image.listed)) throw new NotFoundError('Image');
  return image;
}

export function imageRoutes(bus: CommandBus, store: ReadStore): RouteSpec[] {
  const images = () => store.collection<ImageView>(IMAGES);
  return [
    route({
      method: 'get', path: '/images', tag: 'images', access: 'user', summary: 'List images, sorted by name (users: listed ones)',
      query: catalogListQuery, response: z.array(ImageSchema),
      async handler({ actor, query }) {
        const listed = actor.role === 'admin' ? (query.listed === undefined ? {} : { listed: query.listed === 'true' }) : { listed: true };
        return (await images().find({ ...listed, ...nameFilter(query.q) }, { sort: { nameLower: 1 } })).map(toImageDto);
      },
    }),
    route({
      method: 'post', path: '/images', tag: 'images', access: 'admin', status: 201, summary: 'Add an image',
      body: CreateImage, response: ImageSchema,
      async handler({ body, context }) {
        const imageId = randomUUID();
        await bus.execute(imageDecider, imageStream(imageId), { type: 'CreateImage', data: { imageId, ...body } }, context);
        return reply(201, toImageDto((await images().get(imageId))!));
      },
    }),
    route({
      method: 'get', path: '/images/:id', tag: 'images', access: 'user', summary: 'One image', response: ImageSchema,
      async handler({ actor, params }) {
        return toImageDto(await visibleImage(store, actor, params.id!));
      },
    }),
    route({
      method: 'patch', path: '/images/:id', tag: 'images', access: 'admin', summary: 'Change an image (list/unlist with `listed`)',
      body: UpdateImage, response: ImageSchema,
      async handler({ params, body, context }) {
        await bus.execute(imageDecider, imageStream(params.id!), { type: 'UpdateImage', data: body }, context);
        return toImageDto((await images().get(params.id!))!);
      },
    }),
    route({
      method: 'delete', path: '/images/:id', tag: 'images', access: 'admin', status: 204,
      summary: 'Delete an image (409 IN_USE while a live instance uses it)',
      async handler({ params, context }) {
        const liveInstances = await liveInstancesUsing(store, 'imageId', params.id!);
        await bus.execute(imageDecider, imageStream(params.id!), { type: 'DeleteImage', data: { liveInstances } }, context);
        return reply(204);
      },
    }),
  ];
}
