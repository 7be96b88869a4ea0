import { renderHook } from '@testing-library/react';

import { useWebSocket } from '@/hooks/useWebSocket';

// The seed's own hook test, kept as it was.
describe('useWebSocket', () => {
  beforeEach(() => {
    global.WebSocket = jest.fn(() => ({
      send: jest.fn(),
      close: jest.fn(),
      readyState: 1,
    })) as unknown as typeof WebSocket;
  });

  it('connects to the WebSocket server', () => {
    const onMessage = jest.fn();
    renderHook(() => useWebSocket({ url: 'ws://localhost:8000/api/v1/ws', onMessage }));
    expect(global.WebSocket).toHaveBeenCalledWith('ws://localhost:8000/api/v1/ws');
  });
});
