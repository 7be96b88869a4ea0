/**
 * jsdom with Node's own fetch: jsdom has none, and the sidebar's test polls a real HTTP
 * server. Everything else is jsdom's.
 */

import type { EnvironmentContext, JestEnvironmentConfig } from '@jest/environment';
import { TestEnvironment } from 'jest-environment-jsdom';

export default class JsdomWithFetch extends TestEnvironment {
  constructor(config: JestEnvironmentConfig, context: EnvironmentContext) {
    super(config, context);
    Object.assign(this.global, { fetch, Headers, Request, Response });
  }
}
