/** How an event reads to a person: the text of its toast and of its line in the feed. */

import {
  isBlogUpdate,
  isCommentUpdate,
  isSystemNotification,
  type WsEvent,
} from "@/lib/protocol";

export type Tone = "success" | "info" | "warning" | "error" | "neutral";

export interface EventDescription {
  title: string;
  description?: string;
  tone: Tone;
  /** Worth interrupting the reader with a toast (edits and removals of comments are not). */
  toast: boolean;
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value : undefined;
}

function postName(data: Record<string, unknown>): string {
  return (
    text(data.title) ?? text(data.post_title) ?? `Post ${String(data.post_id)}`
  );
}

export function describeEvent(event: WsEvent): EventDescription {
  if (isBlogUpdate(event)) {
    const name = postName(event.data);
    switch (event.data.action) {
      case "created":
        return {
          title: "New post published",
          description: name,
          tone: "success",
          toast: true,
        };
      case "updated":
        return {
          title: "Post updated",
          description: name,
          tone: "info",
          toast: true,
        };
      case "deleted":
        return {
          title: "Post removed",
          description: name,
          tone: "neutral",
          toast: true,
        };
    }
  }
  if (isCommentUpdate(event)) {
    const on = `on ${postName(event.data)}`;
    switch (event.data.action) {
      case "created":
        return {
          title: "New comment",
          description: on,
          tone: "info",
          toast: true,
        };
      case "updated":
        return {
          title: "Comment edited",
          description: on,
          tone: "neutral",
          toast: false,
        };
      case "deleted":
        return {
          title: "Comment removed",
          description: on,
          tone: "neutral",
          toast: false,
        };
    }
  }
  if (isSystemNotification(event)) {
    const tone: Tone = ["info", "warning", "error"].includes(event.data.level)
      ? event.data.level
      : "info";
    return { title: String(event.data.message), tone, toast: true };
  }
  // A blog's own type (WSB_EVENT_TYPES; the README's example): the demo toasts it too.
  if (event.type === "like_update" && typeof event.data.likes === "number") {
    const likes =
      event.data.likes === 1 ? "1 like" : `${event.data.likes} likes`;
    return {
      title: "Post liked",
      description: `${likes} on ${postName(event.data)}`,
      tone: "success",
      toast: true,
    };
  }
  return { title: `Update: ${event.type}`, tone: "neutral", toast: false };
}
