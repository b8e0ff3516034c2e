// One browser participant in a room: joins through the service, runs one RTCPeerConnection
// (the microphone pushed, every other track in the room pulled), follows the room over the
// events WebSocket, and rebuilds everything after a drop.
//
// Negotiation is strictly one step at a time (a queue): the service relays each step to
// Realtime, which keeps one offer/answer state per session. Mute only disables the
// microphone track (it then sends silence); its m-line is never closed, because closing the
// first m-line of the BUNDLE group moves Chrome to a new transport (docs/webrtc-interop.md §2.3).

import { Api, ApiError } from "./api.js";

const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 15000];
const DISCONNECTED_GRACE_MS = 5000;
const SNAPSHOT_TIMEOUT_MS = 10000;
const STATS_INTERVAL_MS = 2000;
const FIRST_STATS_MS = 500;
const PING_INTERVAL_MS = 15000;
const PONG_TIMEOUT_MS = 10000;
const PULL_RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 8000];
const PULL_BATCH = 32;
const LEVEL_INTERVAL_MS = 100;
const SPEAKING_RMS = 0.02;
const SPEAKING_HOLD_MS = 400;
const CREDENTIAL_MIN_VALID_MS = 5000;

// Refusals that no retry can fix: tell the person and stop.
const FATAL = new Map([
  ["token_invalid", "This invite link is not valid. Ask for a new one."],
  ["token_expired", "This invite link has expired. Ask for a new one."],
  ["wrong_room", "This invite link is for another room."],
  ["room_not_found", "This room does not exist any more."],
  ["room_full", "This room is full right now. Try again later."],
  ["listener_cannot_publish", "This invite is for listening only."],
  ["invite_revoked", "This invite link has been revoked. Ask for a new one."],
  ["invite_unknown", "This invite link is not valid any more. Ask for a new one."],
  ["invite_full", "Too many people are in with this invite link. Ask for your own."],
  ["kicked", "A moderator removed you from this room."],
  ["banned", "A moderator has banned this name from the room."],
]);
const CLOSE_REMOVED_BY_MODERATOR = 4403;
const MUTED_BY_MODERATOR = "muted_by_moderator";

export function trackKey(track) {
  return `${track.sessionId}/${track.trackName}`;
}

function qualityOf({ connected, rttMs, lossRatio, jitterMs }) {
  if (!connected) return "offline";
  if (lossRatio > 0.08 || rttMs > 500 || jitterMs > 80) return "poor";
  if (lossRatio > 0.02 || rttMs > 250 || jitterMs > 30) return "fair";
  return "good";
}

export class Call extends EventTarget {
  constructor({ room, token, name, microphone, audioContext }) {
    super();
    this.api = new Api(room);
    this.room = room;
    this.token = token;
    this.name = name;
    this.microphone = microphone; // MediaStream or null (listening only)
    this.micTrack = microphone ? microphone.getAudioTracks()[0] : null;
    this.audioContext = audioContext;
    this.state = "idle";
    this.role = null;
    this.me = null;
    this.muted = false;
    this.generation = 0;
    this.members = new Map(); // member id -> {id, kind, name, tracks: Map<key, track>, speaking: Set}
    this.volumes = new Map(); // "memberId/trackName" -> 0..1, kept across reconnects
    this.pullStates = new Map(); // track key -> "pending" | "pulled" | "retrying" | "failed"
    this.mids = new Map(); // mid -> track key
    this.sinks = new Map(); // track key -> {audio, memberId, trackName}
    this.timers = new Set();
    this.lastInbound = new Map();
    this.quality = null;
    this.speaking = false;
    this.lastVoiceAt = 0;
    this.levelTimer = null;
    this.resetSession();
    this.startLevelMeter();
  }

  // -- lifecycle ---------------------------------------------------------------------------

  async start() {
    this.setState("joining");
    await this.connect(); // the first attempt reports its error to the caller
  }

  async leave() {
    if (this.state === "left") return;
    const wasJoined = this.api.participantId !== null;
    this.setState("left");
    this.teardown();
    if (wasJoined) {
      try {
        await this.api.participant("leave", {}, { keepalive: true });
      } catch {
        // Gone already: the service removes a participant whose socket closed.
      }
    }
    if (this.microphone) this.microphone.getTracks().forEach((t) => t.stop());
    clearInterval(this.levelTimer);
  }

  setState(state, detail = "") {
    if (state === this.state && !detail) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  resetSession() {
    this.pc = null;
    this.ws = null;
    this.micTransceiver = null;
    this.queue = Promise.resolve();
    this.pullWanted = new Set();
    this.pullScheduled = false;
    this.pullAttempts = new Map();
    this.closeWanted = new Set();
    this.closeScheduled = false;
    this.members.clear();
    this.pullStates.clear();
    this.mids.clear();
    this.lastInbound.clear();
  }

  later(fn, ms) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  teardown() {
    this.generation += 1;
    this.timers.forEach((t) => clearTimeout(t));
    this.timers.clear();
    clearInterval(this.statsTimer);
    clearInterval(this.pingTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.onmessage = null;
      this.ws.close(1000, "leaving");
    }
    if (this.pc) {
      this.pc.ontrack = null;
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    for (const sink of this.sinks.values()) {
      sink.audio.srcObject = null;
      sink.audio.remove();
    }
    this.sinks.clear();
    this.resetSession();
    this.emit("members");
  }

  async connect() {
    const generation = ++this.generation;
    const joined = await this.join();
    if (generation !== this.generation) return;
    this.api.adopt(joined);
    this.role = joined.role;
    this.me = joined.participantId;
    this.pc = new RTCPeerConnection({
      iceServers: joined.iceServers,
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    });
    this.pc.ontrack = (event) => this.onTrack(event);
    this.pc.onconnectionstatechange = () => this.onConnectionState(generation);
    // The microphone first: its m-line is then the BUNDLE tag, and it is never closed.
    if (this.micTrack && this.role === "speaker") {
      try {
        await this.enqueue((ctx) => this.publish(ctx), generation, { rethrow: true });
      } catch (err) {
        if (!(err instanceof ApiError) || err.code !== MUTED_BY_MODERATOR) throw err;
        // Muted by a moderator (kept across rejoins): listen until unmuted.
        await this.pc.setLocalDescription({ type: "rollback" });
        this.emit("problem", { message: "A moderator has muted you; you can still listen." });
      }
    }
    await this.openSocket(generation);
    this.scheduleRefresh(joined.credentialTtl, generation);
    this.statsTimer = setInterval(() => this.collectStats(generation), STATS_INTERVAL_MS);
    this.later(() => this.collectStats(generation), FIRST_STATS_MS);
    this.setState("connected");
  }

  async join() {
    // After a drop, a still-valid credential rejoins (and replaces the old participant) even
    // if the invite has expired meanwhile; otherwise the invite token joins.
    if (this.api.credential && this.api.credentialValidForMs() > CREDENTIAL_MIN_VALID_MS) {
      try {
        return await this.api.join({ credential: this.api.credential, name: this.name });
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 401) throw err;
      }
    }
    return this.api.join({ token: this.token, name: this.name });
  }

  reconnect(reason) {
    if (this.state === "left" || this.state === "reconnecting" || this.state === "failed") return;
    console.info(`reconnecting: ${reason}`);
    this.teardown();
    this.setState("reconnecting", reason);
    this.retryConnect(0);
  }

  retryConnect(attempt) {
    const base = RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)];
    const delay = base / 2 + Math.random() * base / 2;
    const reconnectGeneration = this.generation;
    this.later(async () => {
      if (this.state !== "reconnecting" || reconnectGeneration !== this.generation) return;
      try {
        await this.connect();
      } catch (err) {
        if (this.state !== "reconnecting") return;
        const fatal = err instanceof ApiError && FATAL.get(err.code);
        this.teardown();
        if (fatal) {
          this.fail(fatal);
          return;
        }
        this.setState("reconnecting", `attempt ${attempt + 2}`);
        this.retryConnect(attempt + 1);
      }
    }, delay);
  }

  fail(message) {
    this.teardown();
    this.setState("failed", message);
    this.emit("fatal", { message });
  }

  onConnectionState(generation) {
    if (generation !== this.generation || !this.pc) return;
    const state = this.pc.connectionState;
    this.emit("connection", { state });
    if (state === "failed") {
      this.reconnect("media connection failed");
    } else if (state === "disconnected") {
      this.later(() => {
        if (generation === this.generation && this.pc && this.pc.connectionState === "disconnected") {
          this.reconnect("media connection lost");
        }
      }, DISCONNECTED_GRACE_MS);
    }
  }

  // A refused or failed step: rebuild for what a new session fixes, report the rest.
  onStepError(err) {
    if (this.state === "left") return;
    if (err instanceof ApiError) {
      const fatal = FATAL.get(err.code);
      if (fatal) {
        this.fail(fatal);
        return;
      }
      if ([401, 404, 409, 410].includes(err.status) || err.status >= 500 || err.status === 0) {
        this.reconnect(`${err.code}: ${err.message}`);
        return;
      }
      this.emit("problem", { message: err.message });
      return;
    }
    // A browser-side negotiation error leaves the connection in an unknown state.
    this.reconnect(`negotiation failed: ${err && err.message}`);
  }

  // Steps run one at a time, each bound to the connection it was queued for (its own
  // RTCPeerConnection and participant id): a step that outlives a reconnect fails on its old,
  // closed connection, or is refused by the service, and never touches the new one.
  enqueue(step, generation = this.generation, { rethrow = false } = {}) {
    const run = this.queue.then(async () => {
      if (generation !== this.generation) return;
      await step({ pc: this.pc, participantId: this.api.participantId });
    });
    this.queue = run.catch((err) => {
      if (generation === this.generation && !rethrow) this.onStepError(err);
    });
    return rethrow ? run : this.queue;
  }

  // -- credential --------------------------------------------------------------------------

  scheduleRefresh(ttlS, generation) {
    this.later(async () => {
      if (generation !== this.generation) return;
      try {
        const fresh = await this.api.participant("refresh", {});
        if (generation !== this.generation) return; // a rejoin made a new credential meanwhile
        this.api.adopt(fresh);
        if (fresh.iceServers && this.pc) {
          this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: fresh.iceServers });
        }
        this.scheduleRefresh(fresh.credentialTtl, generation);
      } catch (err) {
        if (generation === this.generation) this.onStepError(err);
      }
    }, (ttlS * 1000) / 2);
  }

  // -- events socket -----------------------------------------------------------------------

  openSocket(generation) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.api.socketUrl());
      this.ws = ws;
      let settled = false;
      let pongTimer = null;
      const timeout = this.later(() => {
        if (!settled) {
          settled = true;
          ws.close();
          reject(new Error("the room did not answer"));
        }
      }, SNAPSHOT_TIMEOUT_MS);
      ws.onopen = () => ws.send(JSON.stringify({ type: "auth", credential: this.api.credential }));
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message.type === "snapshot") {
          this.applySnapshot(message);
          if (!settled) {
            settled = true;
            clearTimeout(timeout);
            this.timers.delete(timeout);
            resolve();
          }
        } else if (message.type === "pong") {
          clearTimeout(pongTimer);
        } else if (message.type === "error") {
          console.warn("room events:", message.error);
        } else {
          this.onRoomEvent(message);
        }
      };
      ws.onclose = (event) => {
        clearTimeout(pongTimer);
        if (!settled) {
          settled = true;
          reject(new Error(`events socket closed (${event.code})`));
          return;
        }
        if (generation !== this.generation) return;
        if (event.code === CLOSE_REMOVED_BY_MODERATOR) {
          this.fail(FATAL.get("kicked"));
          return;
        }
        this.reconnect(`events socket closed (${event.code})`);
      };
      this.pingTimer = setInterval(() => {
        if (ws.readyState !== WebSocket.OPEN) return;
        ws.send(JSON.stringify({ type: "ping" }));
        clearTimeout(pongTimer);
        pongTimer = setTimeout(() => ws.close(4000, "no pong"), PONG_TIMEOUT_MS);
      }, PING_INTERVAL_MS);
    });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  // -- the room ----------------------------------------------------------------------------

  applySnapshot({ members, muted }) {
    this.members.clear();
    for (const member of members) this.addMember(member);
    for (const id of muted || []) this.setModeratorMuted(id, true);
    this.emit("members");
  }

  setModeratorMuted(memberId, muted) {
    const member = this.members.get(memberId);
    if (member) member.moderatorMuted = muted;
    if (memberId === this.me && muted) {
      this.emit("problem", { message: "A moderator has muted you; you can still listen." });
    }
  }

  addMember(member) {
    const entry = {
      id: member.id,
      kind: member.kind,
      name: member.name,
      tracks: new Map(),
      speaking: new Set(member.speaking),
      moderatorMuted: false,
    };
    this.members.set(member.id, entry);
    for (const track of member.tracks) this.addTrack(entry, track);
  }

  addTrack(member, track) {
    const key = trackKey(track);
    member.tracks.set(key, track);
    if (member.id !== this.me) this.requestPull(key);
  }

  onRoomEvent(event) {
    switch (event.type) {
      case "member_joined":
        if (!this.members.has(event.member.id)) this.addMember(event.member);
        break;
      case "member_left":
        for (const key of this.members.get(event.memberId)?.tracks.keys() ?? []) this.release(key);
        this.members.delete(event.memberId);
        break;
      case "track_published": {
        const member = this.members.get(event.memberId);
        if (member) this.addTrack(member, event.track);
        break;
      }
      case "track_removed": {
        const member = this.members.get(event.memberId);
        const key = trackKey(event.track);
        if (member) {
          member.tracks.delete(key);
          member.speaking.delete(event.track.trackName);
        }
        this.release(key);
        break;
      }
      case "moderation":
        this.setModeratorMuted(event.memberId, event.muted);
        break;
      case "speaking": {
        const member = this.members.get(event.memberId);
        if (!member) return;
        if (event.speaking) member.speaking.add(event.trackName);
        else member.speaking.delete(event.trackName);
        this.emit("speaking", { memberId: event.memberId, trackName: event.trackName, speaking: event.speaking });
        return;
      }
      default:
        return;
    }
    this.emit("members");
  }

  findTrack(key) {
    for (const member of this.members.values()) {
      const track = member.tracks.get(key);
      if (track) return { member, track };
    }
    return null;
  }

  // -- media: publish, pull, close -----------------------------------------------------------

  async publish({ pc, participantId }) {
    const transceiver = pc.addTransceiver(this.micTrack, {
      direction: "sendonly",
      streams: [this.microphone],
    });
    await pc.setLocalDescription(await pc.createOffer());
    const reply = await this.api.participant("publish", {
      sessionDescription: { type: "offer", sdp: pc.localDescription.sdp },
      mid: transceiver.mid,
    }, { participantId });
    await pc.setRemoteDescription(reply.sessionDescription);
    this.micTransceiver = transceiver;
    this.emit("members");
  }

  requestPull(key) {
    if (this.pullStates.has(key) && this.pullStates.get(key) !== "retrying") return;
    this.pullStates.set(key, "pending");
    this.pullWanted.add(key);
    if (!this.pullScheduled) {
      this.pullScheduled = true;
      this.enqueue((ctx) => this.flushPulls(ctx));
    }
  }

  async flushPulls({ pc, participantId }) {
    this.pullScheduled = false;
    const keys = [...this.pullWanted].filter((key) => this.findTrack(key));
    this.pullWanted.clear();
    for (let i = 0; i < keys.length; i += PULL_BATCH) {
      const batch = keys.slice(i, i + PULL_BATCH);
      const tracks = batch.map((key) => {
        const { track } = this.findTrack(key) || {};
        return track ? { sessionId: track.sessionId, trackName: track.trackName } : null;
      }).filter(Boolean);
      if (!tracks.length) continue;
      const reply = await this.api.participant("pull", { tracks }, { participantId });
      if (pc !== this.pc) return; // rebuilt meanwhile
      for (const item of reply.tracks) {
        const key = trackKey(item);
        if (item.mid) {
          this.mids.set(item.mid, key);
          this.pullStates.set(key, "pulled");
          this.pullAttempts.delete(key);
        } else {
          this.retryPull(key);
        }
      }
      if (reply.requiresImmediateRenegotiation && reply.sessionDescription) {
        await pc.setRemoteDescription(reply.sessionDescription);
        await pc.setLocalDescription(await pc.createAnswer());
        await this.api.participant("answer", {
          sessionDescription: { type: "answer", sdp: pc.localDescription.sdp },
        }, { participantId });
      }
    }
    this.emit("members");
  }

  retryPull(key) {
    // The publisher may not be sending yet (Realtime's not_found_track_error).
    const attempt = this.pullAttempts.get(key) || 0;
    if (attempt >= PULL_RETRY_DELAYS_MS.length) {
      this.pullStates.set(key, "failed");
      return;
    }
    this.pullAttempts.set(key, attempt + 1);
    this.pullStates.set(key, "retrying");
    const generation = this.generation;
    this.later(() => {
      if (generation === this.generation && this.findTrack(key)) this.requestPull(key);
    }, PULL_RETRY_DELAYS_MS[attempt]);
  }

  release(key) {
    this.pullStates.delete(key);
    this.pullWanted.delete(key);
    const sink = this.sinks.get(key);
    if (sink) {
      sink.audio.srcObject = null;
      sink.audio.remove();
      this.sinks.delete(key);
    }
    for (const [mid, pulled] of this.mids) {
      if (pulled !== key) continue;
      this.mids.delete(mid);
      this.closeWanted.add(mid);
      if (!this.closeScheduled) {
        this.closeScheduled = true;
        this.enqueue((ctx) => this.flushCloses(ctx));
      }
    }
  }

  async flushCloses({ pc, participantId }) {
    this.closeScheduled = false;
    const mids = [...this.closeWanted];
    this.closeWanted.clear();
    if (!mids.length) return;
    for (const transceiver of pc.getTransceivers()) {
      if (mids.includes(transceiver.mid)) transceiver.stop();
    }
    await pc.setLocalDescription(await pc.createOffer());
    const reply = await this.api.participant("close", {
      mids,
      sessionDescription: { type: "offer", sdp: pc.localDescription.sdp },
    }, { participantId });
    await pc.setRemoteDescription(reply.sessionDescription);
  }

  onTrack(event) {
    const key = this.mids.get(event.transceiver.mid);
    if (!key) return;
    const found = this.findTrack(key);
    // Chrome decodes a remote audio track only while something plays it.
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.srcObject = new MediaStream([event.track]);
    const memberId = found ? found.member.id : "";
    const trackName = found ? found.track.trackName : "";
    audio.volume = this.volumes.get(`${memberId}/${trackName}`) ?? 1;
    audio.className = "sink";
    document.body.append(audio);
    audio.play().catch((err) => this.emit("autoplay", { message: String(err) }));
    this.sinks.set(key, { audio, memberId, trackName });
  }

  // -- controls --------------------------------------------------------------------------------

  setMuted(muted) {
    this.muted = muted;
    // The m-line stays: a disabled track sends silence and keeps its Realtime track alive.
    if (this.micTrack) this.micTrack.enabled = !muted;
    if (muted) this.setSpeaking(false);
    this.emit("muted", { muted });
  }

  setVolume(memberId, trackName, volume) {
    const value = Math.max(0, Math.min(1, volume));
    this.volumes.set(`${memberId}/${trackName}`, value);
    for (const sink of this.sinks.values()) {
      if (sink.memberId === memberId && sink.trackName === trackName) sink.audio.volume = value;
    }
  }

  volumeOf(memberId, trackName) {
    return this.volumes.get(`${memberId}/${trackName}`) ?? 1;
  }

  // -- microphone level and speaking ---------------------------------------------------------

  startLevelMeter() {
    if (!this.microphone || !this.audioContext) return;
    const source = this.audioContext.createMediaStreamSource(this.microphone);
    const analyser = this.audioContext.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    this.levelTimer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = this.muted ? 0 : Math.sqrt(sum / samples.length);
      const now = performance.now();
      if (rms > SPEAKING_RMS) this.lastVoiceAt = now;
      this.setSpeaking(!this.muted && now - this.lastVoiceAt < SPEAKING_HOLD_MS);
      this.emit("level", { level: Math.min(1, rms * 4) });
    }, LEVEL_INTERVAL_MS);
  }

  setSpeaking(speaking) {
    if (speaking === this.speaking) return;
    this.speaking = speaking;
    if (this.micTransceiver) this.send({ type: "speaking", speaking });
  }

  // -- connection quality ------------------------------------------------------------------------

  async collectStats(generation) {
    const pc = this.pc;
    if (generation !== this.generation || !pc) return;
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return; // closed meanwhile
    }
    if (generation !== this.generation) return; // torn down while waiting
    let rttS = null;
    let lost = 0;
    let received = 0;
    let jitterS = 0;
    let remoteLoss = 0;
    let selectedPair = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) selectedPair = report.get(s.selectedCandidatePairId);
    });
    if (selectedPair && typeof selectedPair.currentRoundTripTime === "number") rttS = selectedPair.currentRoundTripTime;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        const before = this.lastInbound.get(s.id) || { lost: 0, received: 0 };
        lost += Math.max(0, (s.packetsLost || 0) - before.lost);
        received += Math.max(0, (s.packetsReceived || 0) - before.received);
        this.lastInbound.set(s.id, { lost: s.packetsLost || 0, received: s.packetsReceived || 0 });
        jitterS = Math.max(jitterS, s.jitter || 0);
      } else if (s.type === "remote-inbound-rtp" && s.kind === "audio") {
        remoteLoss = Math.max(remoteLoss, s.fractionLost || 0);
        if (rttS === null && typeof s.roundTripTime === "number") rttS = s.roundTripTime;
      }
    });
    const sample = {
      connected: pc.connectionState === "connected",
      rttMs: rttS === null ? 0 : rttS * 1000,
      lossRatio: Math.max(remoteLoss, lost + received > 0 ? lost / (lost + received) : 0),
      jitterMs: jitterS * 1000,
    };
    this.quality = { ...sample, level: qualityOf(sample) };
    this.emit("quality", this.quality);
  }

  // What a person (or a test) can look at from the console: window.switchboard.stats().
  async debugStats() {
    const pc = this.pc;
    if (!pc) return { state: this.state };
    const report = await pc.getStats();
    const inbound = [];
    let pair = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        inbound.push({
          mid: s.mid, track: this.mids.get(s.mid) || null, packetsReceived: s.packetsReceived,
          totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel,
          totalSamplesReceived: s.totalSamplesReceived, concealedSamples: s.concealedSamples,
        });
      } else if (s.type === "transport" && s.selectedCandidatePairId) {
        const p = report.get(s.selectedCandidatePairId);
        const local = report.get(p.localCandidateId);
        const remote = report.get(p.remoteCandidateId);
        pair = {
          local: { address: local.address, port: local.port, type: local.candidateType },
          remote: { address: remote.address, port: remote.port, type: remote.candidateType },
        };
      }
    });
    return {
      state: this.state,
      participantId: this.me,
      role: this.role,
      connectionState: pc.connectionState,
      muted: this.muted,
      micEnabled: this.micTrack ? this.micTrack.enabled : null,
      transceivers: pc.getTransceivers().map((t) => ({
        mid: t.mid, direction: t.direction, currentDirection: t.currentDirection,
        sending: Boolean(t.sender.track),
      })),
      inbound,
      pair,
      quality: this.quality,
    };
  }
}
