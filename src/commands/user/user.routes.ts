import { z } from 'zod';
import { ValidationError } from '../../domain/shared/errors.ts';
import { reply, route, type RouteSpec } from '../../http/route.ts';
import type { UserView } from '../../projections/users.projection.ts';
import { assertAdmin, assertSelfOrAdmin, type Accounts } from './accounts.ts';
import type { SignInThrottle } from './sign-in-throttle.ts';
import { TOKEN_LIFETIME_SECONDS } from './token.ts';

const username = z
  .string()
  .regex(/^[A-Za-z0-9._-]{3,32}$/, 'must be 3–32 letters, digits, ".", "-" or "_"')
  .meta({ example: 'zhangsan' });
const password = z.string().min(8, 'must be at least 8 characters').max(256, 'must be at most 256 characters');
const role = z.enum(['user', 'admin']);
const displayName = z.string().trim().max(64, 'must be at most 64 characters').refine((s) => !/\p{Cc}/u.test(s), 'must not contain control characters');

const SshKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  publicKey: z.string(),
  keyType: z.string(),
  fingerprint: z.string().meta({ description: 'SHA256 fingerprint, as `ssh-keygen -l` prints it' }),
  addedAt: z.string(),
});
export const UserSchema = z.object({
  id: z.string(),
  username: z.string(),
  role,
  disabled: z.boolean(),
  displayName: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
  sshKeys: z.array(SshKeySchema),
});

const CreateUserBody = z.strictObject({ username, password, role: role.optional(), displayName: displayName.optional(), disabled: z.boolean().optional() });
const UpdateUserBody = z.strictObject({ role: role.optional(), disabled: z.boolean().optional(), displayName: displayName.optional(), password: password.optional() });
const LoginBody = z.strictObject({ username: z.string().min(1, 'is required').max(64), password: z.string().min(1, 'is required').max(256) });
const PasswordBody = z.strictObject({ currentPassword: z.string().min(1, 'is required').max(256), newPassword: password });
const SshKeyBody = z.strictObject({
  name: displayName.optional(),
  publicKey: z.string().max(16_384, 'is too long').meta({ example: 'ssh-ed25519 AAAAC3Nza… me@laptop' }),
});
const UserListQuery = z.strictObject({ q: z.string().max(64).optional(), role: role.optional() });

export function toUserDto(user: UserView): z.infer<typeof UserSchema> {
  const { id, username: name, role: r, disabled, displayName: dn, createdAt, updatedAt, sshKeys } = user;
  return { id, username: name, role: r, disabled, displayName: dn, createdAt, updatedAt, sshKeys: sshKeys.map((k) => ({ ...k })) };
}

export function userRoutes(accounts: Accounts, throttle: SignInThrottle): RouteSpec[] {
  return [
    route({
      method: 'post', path: '/auth/login', tag: 'auth', access: 'public', summary: 'Sign in; returns a bearer token valid for 12 hours',
      body: LoginBody,
      response: z.object({ token: z.string(), expiresIn: z.number(), user: UserSchema }),
      async handler({ body, context }) {
        const address = context.clientIp ?? '?';
        throttle.check(body.username, address);
        try {
          const { token, user } = await accounts.login(body.username, body.password);
          throttle.succeeded(body.username, address);
          return { token, expiresIn: TOKEN_LIFETIME_SECONDS, user: toUserDto(user) };
        } catch (err) {
          throttle.failed(body.username, address);
          throw err;
        }
      },
    }),
    route({
      method: 'get', path: '/auth/me', tag: 'auth', access: 'user', summary: 'The signed-in user', response: UserSchema,
      async handler({ actor }) {
        return toUserDto(await accounts.get(actor.id));
      },
    }),
    route({
      method: 'post', path: '/auth/logout', tag: 'auth', access: 'user', status: 204,
      summary: '退出登录: this sign-in ends now on every replica: its token, the live channels and terminals opened with it, and the service links opened with it stop working',
      async handler({ actor, context }) {
        await accounts.signOut(actor, context);
        return reply(204);
      },
    }),
    route({
      method: 'post', path: '/auth/logout-everywhere', tag: 'auth', access: 'user', status: 204,
      summary: '退出所有设备: every sign-in of yours issued until now ends (this one too); SSH keys and the password still sign in',
      async handler({ actor, context }) {
        await accounts.signOutEverywhere(actor.id, context);
        return reply(204);
      },
    }),
    route({
      method: 'post', path: '/auth/password', tag: 'auth', access: 'user', status: 204,
      summary: 'Change your own password (ends your other sessions)', body: PasswordBody,
      async handler({ actor, body, context }) {
        // A stolen token must not become a way to guess the password: the same counts as sign-ins.
        const address = context.clientIp ?? '?';
        throttle.check(actor.username, address);
        try {
          await accounts.changePassword(actor.id, body.currentPassword, body.newPassword, context);
        } catch (err) {
          if (err instanceof ValidationError && err.fields?.currentPassword) throttle.failed(actor.username, address);
          throw err;
        }
        throttle.succeeded(actor.username, address);
        return reply(204);
      },
    }),
    route({
      method: 'get', path: '/users', tag: 'users', access: 'admin', summary: 'List users (sorted by username)',
      query: UserListQuery, response: z.array(UserSchema),
      async handler({ query }) {
        return (await accounts.list(query)).map(toUserDto);
      },
    }),
    route({
      method: 'post', path: '/users', tag: 'users', access: 'admin', status: 201, summary: 'Create a user',
      body: CreateUserBody, response: UserSchema,
      async handler({ body, context }) {
        return reply(201, toUserDto(await accounts.register(body, context)));
      },
    }),
    route({
      method: 'get', path: '/users/me/ssh-keys', tag: 'ssh-keys', access: 'user', summary: 'Your SSH public keys',
      response: z.array(SshKeySchema),
      async handler({ actor }) {
        return (await accounts.get(actor.id)).sshKeys;
      },
    }),
    route({
      method: 'post', path: '/users/me/ssh-keys', tag: 'ssh-keys', access: 'user', status: 201,
      summary: 'Register an SSH public key for the jump host', body: SshKeyBody, response: SshKeySchema,
      async handler({ actor, body, context }) {
        return reply(201, await accounts.addSshKey(actor.id, body, context));
      },
    }),
    route({
      method: 'delete', path: '/users/me/ssh-keys/:keyId', tag: 'ssh-keys', access: 'user', status: 204, summary: 'Remove one of your SSH keys',
      async handler({ actor, params, context }) {
        await accounts.removeSshKey(actor.id, params.keyId!, context);
        return reply(204);
      },
    }),
    route({
      method: 'get', path: '/users/:id', tag: 'users', access: 'user', summary: 'One user (admins: anyone; users: themselves)', response: UserSchema,
      async handler({ actor, params }) {
        assertSelfOrAdmin(actor, params.id!);
        return toUserDto(await accounts.get(params.id!));
      },
    }),
    route({
      method: 'patch', path: '/users/:id', tag: 'users', access: 'user',
      summary: 'Change a user: admins change role, disabled, display name and password; users their own display name',
      body: UpdateUserBody, response: UserSchema,
      async handler({ actor, params, body, context }) {
        const id = params.id!;
        assertSelfOrAdmin(actor, id);
        const { password: newPassword, ...changes } = body;
        if (actor.role !== 'admin' && (changes.role !== undefined || changes.disabled !== undefined || newPassword !== undefined)) {
          assertAdmin(actor);
        }
        await accounts.get(id);
        if (newPassword !== undefined) await accounts.changePassword(id, undefined, newPassword, context);
        return toUserDto(await accounts.update(id, changes, context));
      },
    }),
    route({
      method: 'delete', path: '/users/:id', tag: 'users', access: 'admin', status: 204, summary: 'Delete a user',
      async handler({ params, context }) {
        await accounts.delete(params.id!, context);
        return reply(204);
      },
    }),
  ];
}
