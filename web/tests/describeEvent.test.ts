import { httpBaseFromWs, realtimeConfig } from "@/lib/config";
import { describeEvent } from "@/lib/describeEvent";
import type { WsEvent } from "@/lib/protocol";

function event(type: string, data: Record<string, unknown>): WsEvent {
  return { id: "e1", type, data, timestamp: "2024-01-01T00:00:00Z" } as WsEvent;
}

describe("describeEvent", () => {
  it.each([
    ["created", "New post published", "success"],
    ["updated", "Post updated", "info"],
    ["deleted", "Post removed", "neutral"],
  ])('a post %s reads "%s"', (action, title, tone) => {
    expect(
      describeEvent(event("blog_update", { post_id: "p1", action })),
    ).toEqual({
      title,
      description: "Post p1",
      tone,
      toast: true,
    });
  });

  it("toasts a blog's own type the demo knows, like_update", () => {
    expect(
      describeEvent(event("like_update", { post_id: "p1", likes: 42 })),
    ).toEqual({
      title: "Post liked",
      description: "42 likes on Post p1",
      tone: "success",
      toast: true,
    });
  });

  it("uses a title that rides along in data", () => {
    const described = describeEvent(
      event("blog_update", {
        post_id: "p1",
        action: "created",
        title: "Hello, world",
      }),
    );
    expect(described.description).toBe("Hello, world");
  });

  it("toasts a new comment, but not an edit or a removal", () => {
    const data = { post_id: "p1", comment_id: "c1" };
    expect(
      describeEvent(event("comment_update", { ...data, action: "created" })),
    ).toEqual({
      title: "New comment",
      description: "on Post p1",
      tone: "info",
      toast: true,
    });
    expect(
      describeEvent(event("comment_update", { ...data, action: "updated" }))
        .toast,
    ).toBe(false);
    expect(
      describeEvent(event("comment_update", { ...data, action: "deleted" }))
        .toast,
    ).toBe(false);
  });

  it.each(["info", "warning", "error"])(
    "a system notice keeps its level (%s)",
    (level) => {
      expect(
        describeEvent(
          event("system_notification", {
            message: "Maintenance at 2am",
            level,
          }),
        ),
      ).toEqual({ title: "Maintenance at 2am", tone: level, toast: true });
    },
  );

  it("lists an unknown type quietly", () => {
    expect(describeEvent(event("newsletter.sent", {}))).toEqual({
      title: "Update: newsletter.sent",
      tone: "neutral",
      toast: false,
    });
  });
});

describe("config", () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
  });

  it("derives the HTTP base from the WebSocket URL", () => {
    expect(httpBaseFromWs("ws://localhost:8000/api/v1/ws")).toBe(
      "http://localhost:8000/api/v1",
    );
    expect(httpBaseFromWs("wss://push.example.com/ws")).toBe(
      "https://push.example.com",
    );
  });

  it("reads the environment when called, with the documented defaults", () => {
    delete process.env.NEXT_PUBLIC_WS_URL;
    delete process.env.WSB_HTTP_URL;
    expect(realtimeConfig()).toEqual({
      wsUrl: "ws://localhost:8000/api/v1/ws",
      httpUrl: "http://localhost:8000/api/v1",
    });
    process.env.NEXT_PUBLIC_WS_URL = "wss://push.example.com/api/v1/ws";
    process.env.WSB_HTTP_URL = "http://wsbroadcast:8000/";
    expect(realtimeConfig()).toEqual({
      wsUrl: "wss://push.example.com/api/v1/ws",
      httpUrl: "http://wsbroadcast:8000",
    });
  });

  it("takes a relative URL (one proxy in front of both), and refuses one that cannot work", () => {
    process.env.NEXT_PUBLIC_WS_URL = "/api/v1/ws";
    process.env.WSB_HTTP_URL = "http://wsbroadcast:8000/api/v1";
    expect(realtimeConfig()).toEqual({
      wsUrl: "/api/v1/ws",
      httpUrl: "http://wsbroadcast:8000/api/v1",
    });
    delete process.env.WSB_HTTP_URL;
    expect(realtimeConfig().httpUrl).toBeNull();
    process.env.NEXT_PUBLIC_WS_URL = "ftp://push.example.com/ws";
    expect(() => realtimeConfig()).toThrow(/NEXT_PUBLIC_WS_URL: .*scheme/);
  });
});
