import { describe, expect, it } from 'vitest';
import type { ServiceAddress } from '../commands/instance/service-access.ts';
import { cookieValues, rewriteLocation, scopeCookie, serviceCookies } from './service-proxy.ts';

const port: ServiceAddress = { instanceId: 'i', port: 8888, form: 'port', listenPort: 28003, generation: 'g' };
const host: ServiceAddress = { instanceId: 'i', port: 8888, form: 'host' };

describe('the service proxy\'s header rules', () => {
  it('keeps a service\'s cookies host-only and never under a platform name; in the port form HttpOnly ones are held for that port', () => {
    expect(scopeCookie('a=1; Path=/; Domain=.example.com; Secure', host)).toBe('a=1; Path=/; Secure');
    expect(scopeCookie('a=1; Path=/lab; HttpOnly', host)).toBe('a=1; Path=/lab; HttpOnly');
    expect(scopeCookie('sid=1; Path=/; HttpOnly; SameSite=Lax', port)).toBe('__tq28003_sid=1; Path=/; HttpOnly; SameSite=Lax');
    expect(scopeCookie('_xsrf=2; Path=/', port)).toBe('_xsrf=2; Path=/');
    for (const planted of ['tianqi_service=x; Path=/', 'TIANQI_service_28003=x', 'tianqi_origin_28003=g', '__tq28004_sid=x; HttpOnly', 'novalue', '=x']) {
      expect(scopeCookie(planted, port), planted).toBeNull();
    }
  });

  it('sends a service its own cookies only: no platform cookie, its held ones under their names, none held for another port', () => {
    expect(serviceCookies('a=1; tianqi_service_28003=x; tianqi_origin_28003=g; Tianqi_other=1; b=2', port)).toBe('a=1; b=2');
    expect(serviceCookies('__tq28003_sid=s; __tq28004_sid=other; _xsrf=t', port)).toBe('sid=s; _xsrf=t');
    expect(serviceCookies('__tq28003_sid=s; a=1', host)).toBe('a=1');
    expect(serviceCookies(undefined, port)).toBe('');
  });

  it('reads every value a Cookie header has under one name', () => {
    expect(cookieValues('a=1; tianqi_service=abc.def; tianqi_service=planted', 'tianqi_service')).toEqual(['abc.def', 'planted']);
    expect(cookieValues('xtianqi_service=1', 'tianqi_service')).toEqual([]);
  });

  it('keeps redirects to the service itself on its origin and lets others go', () => {
    expect(rewriteLocation('http://127.0.0.1:8888/lab?a=1#h', 'gpu.example.com:28003')).toBe('/lab?a=1#h');
    expect(rewriteLocation('http://localhost:8888/', undefined)).toBe('/');
    expect(rewriteLocation('/login', undefined)).toBe('/login');
    expect(rewriteLocation('http://gpu.example.com:28003/x', 'gpu.example.com:28003')).toBe('/x');
    expect(rewriteLocation('https://example.org/elsewhere', 'gpu.example.com:28003')).toBe('https://example.org/elsewhere');
  });
});
