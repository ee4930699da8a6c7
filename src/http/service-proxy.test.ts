import { describe, expect, it } from 'vitest';
import type { ServiceAddress } from '../commands/instance/service-access.ts';
import { cookieValue, rewriteLocation, scopeCookie, withoutCookie } from './service-proxy.ts';

const path: ServiceAddress = { instanceId: 'i', port: 8888, form: 'path', prefix: '/svc/i/8888' };
const host: ServiceAddress = { instanceId: 'i', port: 8888, form: 'host', prefix: '' };

describe('the service proxy\'s header rules', () => {
  it('holds a service\'s cookies to its prefix, host-only, and never under the proxy\'s name', () => {
    expect(scopeCookie('a=1; Path=/; Domain=.example.com; Secure', path)).toBe('a=1; Path=/svc/i/8888/; Secure');
    expect(scopeCookie('a=1', path)).toBe('a=1; Path=/svc/i/8888/');
    expect(scopeCookie('a=1; Path=/svc/i/8888/lab', path)).toBe('a=1; Path=/svc/i/8888/lab');
    expect(scopeCookie('a=1; Path=/api', path)).toBe('a=1; Path=/svc/i/8888/api');
    expect(scopeCookie('a=1; Path=relative', path)).toBe('a=1; Path=/svc/i/8888/');
    expect(scopeCookie('a=1; Domain=console.example.com; Path=/x', host)).toBe('a=1; Path=/x');
    expect(scopeCookie('tianqi_service=x; Path=/', path)).toBeNull();
    expect(scopeCookie('=x', path)).toBeNull();
  });

  it('keeps redirects to the service itself under its prefix and lets others go', () => {
    expect(rewriteLocation('http://127.0.0.1:8888/lab?a=1#h', path, 'gpu.example.com')).toBe('/svc/i/8888/lab?a=1#h');
    expect(rewriteLocation('http://localhost:8888/', path, undefined)).toBe('/svc/i/8888/');
    expect(rewriteLocation('/login', path, undefined)).toBe('/svc/i/8888/login');
    expect(rewriteLocation('/svc/i/8888/tree', path, undefined)).toBe('/svc/i/8888/tree');
    expect(rewriteLocation('http://gpu.example.com/x', path, 'gpu.example.com')).toBe('/svc/i/8888/x');
    expect(rewriteLocation('https://example.org/a', path, 'gpu.example.com')).toBe('https://example.org/a');
    expect(rewriteLocation('http://0.0.0.0:8888/a', host, undefined)).toBe('/a');
  });

  it('takes the proxy\'s cookie out of what the service sees', () => {
    expect(withoutCookie('a=1; tianqi_service=x; b=2', 'tianqi_service')).toBe('a=1; b=2');
    expect(withoutCookie('tianqi_service=x', 'tianqi_service')).toBe('');
    expect(withoutCookie(undefined, 'tianqi_service')).toBe('');
    expect(cookieValue('a=1; tianqi_service=abc.def', 'tianqi_service')).toBe('abc.def');
    expect(cookieValue('xtianqi_service=1', 'tianqi_service')).toBeUndefined();
  });
});
