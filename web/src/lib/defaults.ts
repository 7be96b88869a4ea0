/** Defaults shared by the server settings and the client components. */

export const DEFAULT_WS_URL = 'ws://localhost:8000/api/v1/ws';
