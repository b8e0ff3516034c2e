// The room page: /r/<room>#t=<invite token>. The token rides in the URL fragment, which
// browsers never send to a server or in a Referer; it is sent once, in the join request's
// body, and kept in memory for reconnecting.

import { Call } from "./call.js";
import { RoomView } from "./ui.js";

const NAME_KEY = "switchboard.name";
const PROCESSING_KEY = "switchboard.voiceProcessing";

const STATUS_TEXT = {
  joining: "Joining…",
  connected: "Connected",
  reconnecting: "Connection lost. Reconnecting…",
  left: "You left the room.",
  failed: "Disconnected.",
};

function readInvite() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get("t");
  if (!token) return { token: null };
  // Only to show what the invite says before joining: the service verifies the signature.
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
    return { token, role: claims.role, expiresAt: claims.exp, room: claims.room };
  } catch {
    return { token };
  }
}

function roomFromPath() {
  const parts = window.location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[parts.length - 1] || "");
}

function microphoneProblem(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access is blocked. To talk, allow the microphone for this site " +
        "(the icon in the address bar), then press Join again. Or join listening only.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in and press Join again, or join listening only.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone is in use by another application or could not start. " +
        "Close the other application and press Join again, or join listening only.";
    default:
      return `The microphone could not be opened (${err && err.name ? err.name : err}). ` +
        "You can join listening only.";
  }
}

class RoomPage {
  constructor() {
    this.view = new RoomView();
    this.room = roomFromPath();
    this.invite = readInvite();
    this.call = null;
    this.view.setRoom(this.room);
    this.view.nameInput.value = localStorage.getItem(NAME_KEY) || "";
    this.view.processing.checked = localStorage.getItem(PROCESSING_KEY) !== "off";
    this.bind();
    this.showLobby();
  }

  showLobby() {
    const canJoin = Boolean(this.invite.token);
    this.view.showLobby({ role: this.invite.role, expiresAt: this.invite.expiresAt, canJoin });
    if (!canJoin) {
      this.view.showAlert("This link has no invite in it. Ask whoever shared it for a new link.");
    } else if (this.invite.expiresAt && this.invite.expiresAt * 1000 < Date.now()) {
      this.view.showAlert("This invite link has expired. Ask for a new one.");
    }
  }

  bind() {
    const v = this.view;
    v.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.join({ listenOnly: this.invite.role === "listener" });
    });
    v.listenButton.addEventListener("click", () => this.join({ listenOnly: true }));
    v.muteButton.addEventListener("click", () => this.toggleMute());
    v.leaveButton.addEventListener("click", () => this.leave());
    v.rejoinButton.addEventListener("click", () => {
      this.view.showAlert("");
      this.showLobby();
      this.view.nameInput.focus();
    });
    v.processing.addEventListener("change", () => {
      localStorage.setItem(PROCESSING_KEY, v.processing.checked ? "on" : "off");
    });
    document.addEventListener("keydown", (event) => {
      const typing = event.target instanceof HTMLInputElement && event.target.type !== "range";
      if (event.key.toLowerCase() === "m" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
        if (this.call && !this.view.call.hidden && !this.view.micBlock.hidden) this.toggleMute();
      }
    });
    window.addEventListener("pagehide", () => {
      if (this.call) this.call.leave();
    });
  }

  async join({ listenOnly }) {
    const v = this.view;
    const name = v.nameInput.value.trim();
    if (!name) {
      v.showAlert("Please enter your name.");
      v.nameInput.focus();
      return;
    }
    localStorage.setItem(NAME_KEY, name);
    v.showAlert("");
    v.setBusy(true);
    // Created inside the click: browsers let audio start only after a user gesture.
    const audioContext = new AudioContext();
    audioContext.resume().catch(() => {});
    let microphone = null;
    if (!listenOnly) {
      v.setStatus("Asking for your microphone…");
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        v.showAlert("This browser cannot use a microphone on this page (it needs HTTPS). You can join listening only.");
        v.offerListening(true);
        v.setBusy(false);
        v.setStatus("");
        return;
      }
      const processing = v.processing.checked;
      try {
        microphone = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
          video: false,
        });
      } catch (err) {
        v.showAlert(microphoneProblem(err));
        v.offerListening(true);
        v.setBusy(false);
        v.setStatus("");
        v.listenButton.focus();
        return;
      }
    }
    const call = new Call({ room: this.room, token: this.invite.token, name, microphone, audioContext });
    this.call = call;
    window.switchboard = { call, stats: () => call.debugStats() };
    this.follow(call);
    try {
      await call.start();
    } catch (err) {
      await call.leave();
      this.call = null;
      v.setBusy(false);
      v.setStatus("");
      v.showAlert(err && err.code ? this.explain(err) : `Could not join: ${err && err.message}`);
      this.showLobbyKeepingAlert();
      return;
    }
    v.setBusy(false);
    v.showCall({ canTalk: Boolean(microphone) && call.role === "speaker" });
    v.setMuted(false);
    this.render();
    (microphone ? v.muteButton : v.leaveButton).focus();
  }

  showLobbyKeepingAlert() {
    const alert = this.view.alert.textContent;
    this.showLobby();
    if (alert) this.view.showAlert(alert);
  }

  explain(err) {
    const known = {
      token_invalid: "This invite link is not valid. Ask for a new one.",
      token_expired: "This invite link has expired. Ask for a new one.",
      wrong_room: "This invite link is for another room.",
      room_not_found: "This room does not exist (no voice channel is linked to it).",
      room_full: "This room is full right now. Try again later.",
      invite_revoked: "This invite link has been revoked. Ask for a new one.",
      invite_full: "Too many people are in with this invite link. Ask for your own.",
      banned: "A moderator has banned this name from the room.",
      rate_limited: "Too many attempts. Wait a moment and try again.",
      network: "Cannot reach the server. Check your connection and try again.",
    };
    return known[err.code] || `Could not join: ${err.message}`;
  }

  follow(call) {
    const v = this.view;
    call.addEventListener("state", ({ detail }) => {
      v.setStatus(STATUS_TEXT[detail.state] || "");
      if (detail.state === "connected") v.showAlert("");
      if (detail.state === "reconnecting") v.setQuality({ level: "offline", connected: false });
      if (detail.state === "reconnecting" || detail.state === "connected") this.render();
    });
    call.addEventListener("members", () => this.render());
    call.addEventListener("speaking", () => this.render());
    call.addEventListener("muted", ({ detail }) => {
      v.setMuted(detail.muted);
      this.render();
    });
    call.addEventListener("level", ({ detail }) => v.setMicLevel(detail.level));
    call.addEventListener("quality", ({ detail }) => {
      const announce = v.setQuality(detail);
      if (announce) v.setStatus(announce);
    });
    call.addEventListener("problem", ({ detail }) => v.showAlert(detail.message));
    call.addEventListener("autoplay", () => {
      v.showAlert("Your browser blocked playback. Click anywhere on the page to hear the room.");
      document.addEventListener("click", () => {
        document.querySelectorAll("audio.sink").forEach((a) => a.play().catch(() => {}));
        v.showAlert("");
      }, { once: true });
    });
    call.addEventListener("fatal", ({ detail }) => {
      v.showEnded(detail.message);
      v.setStatus(detail.message);
    });
  }

  render() {
    const call = this.call;
    if (!call) return;
    this.view.renderMembers(call.members, {
      me: call.me,
      muted: call.muted,
      pullStates: call.pullStates,
      volumeOf: (memberId, trackName) => call.volumeOf(memberId, trackName),
      onVolume: (memberId, trackName, volume) => call.setVolume(memberId, trackName, volume),
    });
  }

  toggleMute() {
    if (!this.call) return;
    this.call.setMuted(!this.call.muted);
    this.view.setStatus(this.call.muted ? "Microphone muted." : "Microphone on.");
  }

  async leave() {
    if (!this.call) return;
    const call = this.call;
    this.call = null;
    await call.leave();
    this.view.showEnded("You left the room.");
    this.view.setStatus("You left the room.");
  }
}

new RoomPage();
