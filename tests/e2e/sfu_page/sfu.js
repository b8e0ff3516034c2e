// A browser client of the Realtime API, written the way Cloudflare's echo example is: the
// page itself calls the SFU (cross-origin, with the bearer token) and drives its own
// RTCPeerConnection. The Python test drives it through `window.sfu`.
"use strict";

class SfuError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}: ${JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

class SfuSession {
  constructor(baseUrl, appId, secret) {
    this.base = `${baseUrl}/apps/${appId}`;
    this.secret = secret;
    this.id = null;
    this.log = [];
    // No STUN/TURN: every candidate is a host candidate and nothing leaves the machine.
    this.pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    this.localCandidates = [];
    this.pc.onicecandidate = (e) => {
      if (e.candidate) this.localCandidates.push(e.candidate.candidate);
    };
    this.sinks = new Map(); // mid -> <audio> playing the received track
    this.channels = new Map(); // name -> RTCDataChannel
    this.received = new Map(); // channel name -> messages received on it
    this.pc.ontrack = (e) => {
      // Chrome decodes (and so counts samples and energy for) a remote audio track only
      // while something plays it.
      const audio = new Audio();
      audio.srcObject = new MediaStream([e.track]);
      audio.play().catch((err) => this.log.push(`play: ${err}`));
      this.sinks.set(e.transceiver.mid, audio);
    };
  }

  async call(method, path, body) {
    const init = { method, headers: { Authorization: `Bearer ${this.secret}` } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(this.base + path, init);
    const json = await response.json();
    this.log.push({ method, path, status: response.status, json });
    return { status: response.status, json };
  }

  async ok(method, path, body) {
    const { status, json } = await this.call(method, path, body);
    if (status !== 200 && status !== 201) throw new SfuError(status, json);
    return json;
  }

  async open() {
    this.id = (await this.ok("POST", "/sessions/new")).sessionId;
    return this.id;
  }

  // Push every track of `tracks` ([{track, name}]) in one offer.
  async push(tracks) {
    const transceivers = tracks.map(({ track }) =>
      this.pc.addTransceiver(track, { direction: "sendonly" }));
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const result = await this.ok("POST", `/sessions/${this.id}/tracks/new`, {
      sessionDescription: { type: "offer", sdp: this.pc.localDescription.sdp },
      tracks: transceivers.map((t, i) => ({ location: "local", mid: t.mid, trackName: tracks[i].name })),
    });
    await this.pc.setRemoteDescription(result.sessionDescription);
    return { result, mids: transceivers.map((t) => t.mid) };
  }

  // Pull [{sessionId, trackName}] the way the echo example does: the SFU offers, we answer.
  async pull(items) {
    const result = await this.ok("POST", `/sessions/${this.id}/tracks/new`, {
      tracks: items.map((i) => ({ location: "remote", sessionId: i.sessionId, trackName: i.trackName })),
    });
    if (result.requiresImmediateRenegotiation) {
      await this.pc.setRemoteDescription(result.sessionDescription);
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      await this.ok("PUT", `/sessions/${this.id}/renegotiate`, {
        sessionDescription: { type: "answer", sdp: this.pc.localDescription.sdp },
      });
    }
    return result;
  }

  // Stop the transceivers of `mids`, offer, and send that offer with tracks/close, the way
  // partytracks closes a pushed track. Returns {status, json, renegotiationMs} so a test can
  // look at errors; applies the answer when there is one. renegotiationMs runs from the
  // stop() to the applied answer: Chrome moves its transport in between when `mids` hold the
  // first mid of its BUNDLE group.
  async close(mids) {
    const started = performance.now();
    for (const t of this.pc.getTransceivers()) {
      if (mids.includes(t.mid)) t.stop();
    }
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const response = await this.call("PUT", `/sessions/${this.id}/tracks/close`, {
      tracks: mids.map((mid) => ({ mid })),
      sessionDescription: { type: "offer", sdp: this.pc.localDescription.sdp },
      force: false,
    });
    if (response.status === 200 && response.json.sessionDescription) {
      await this.pc.setRemoteDescription(response.json.sessionDescription);
    }
    return { ...response, renegotiationMs: performance.now() - started };
  }

  // The first mid of the BUNDLE group Chrome offered last: its transport.
  bundleTag() {
    const line = this.pc.localDescription.sdp.split("\r\n").find((l) => l.startsWith("a=group:BUNDLE"));
    return line ? line.split(" ")[1] : null;
  }

  // datachannels/establish with our own offer, as an app that creates a channel first does.
  async establish() {
    this.bootstrap = this.pc.createDataChannel("bootstrap");
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const result = await this.ok("POST", `/sessions/${this.id}/datachannels/establish`, {
      dataChannel: { location: "remote", dataChannelName: "server-events" },
      sessionDescription: { type: "offer", sdp: this.pc.localDescription.sdp },
    });
    await this.pc.setRemoteDescription(result.sessionDescription);
    return result;
  }

  // Open our side of a channel the SFU allocated (negotiated, by id); keeps what it receives.
  async openChannel(name, id) {
    const channel = this.pc.createDataChannel(name, { negotiated: true, id });
    this.channels.set(name, channel);
    this.received.set(name, []);
    channel.onmessage = (e) => this.received.get(name).push(e.data);
    channel.onclose = () => this.log.push(`datachannel ${name} closed`);
    await new Promise((resolve, reject) => {
      if (channel.readyState === "open") resolve();
      channel.onopen = resolve;
      setTimeout(() => reject(new Error(`datachannel ${name} did not open`)), 5000);
    });
  }

  async state() {
    return this.ok("GET", `/sessions/${this.id}`);
  }

  async stats() {
    const report = await this.pc.getStats();
    const inbound = {};
    const outbound = {};
    let pair = null;
    let transport = null;
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        inbound[s.mid] = {
          packetsReceived: s.packetsReceived, packetsLost: s.packetsLost,
          totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel,
          totalSamplesReceived: s.totalSamplesReceived, concealedSamples: s.concealedSamples,
          ssrc: s.ssrc,
        };
      } else if (s.type === "outbound-rtp" && s.kind === "audio") {
        outbound[s.mid] = { packetsSent: s.packetsSent, bytesSent: s.bytesSent, ssrc: s.ssrc };
      } else if (s.type === "transport") {
        transport = s;
      }
    });
    if (transport && transport.selectedCandidatePairId) {
      const p = byId.get(transport.selectedCandidatePairId);
      const l = byId.get(p.localCandidateId);
      const r = byId.get(p.remoteCandidateId);
      pair = {
        state: p.state,
        local: { address: l.address, port: l.port, type: l.candidateType, protocol: l.protocol },
        remote: { address: r.address, port: r.port, type: r.candidateType, protocol: r.protocol },
      };
    }
    const candidates = [];
    report.forEach((s) => {
      if (s.type === "local-candidate" || s.type === "remote-candidate") {
        candidates.push(`${s.type} ${s.address}:${s.port} ${s.candidateType}`);
      }
    });
    return {
      inbound, outbound, pair, candidates,
      dtlsState: transport && transport.dtlsState,
      connectionState: this.pc.connectionState,
      transceivers: this.pc.getTransceivers().map((t) => ({
        mid: t.mid, direction: t.direction, currentDirection: t.currentDirection,
      })),
    };
  }
}

async function microphone(count = 1) {
  // Raw fake-device audio: Chrome's voice processing would squash the fake device's beep.
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const track = stream.getAudioTracks()[0];
  const tracks = [track];
  while (tracks.length < count) tracks.push(track.clone());
  return tracks;
}

// Steady sine tones (one track each), so a receiver can tell tracks apart by frequency and
// see every gap: the fake microphone beeps only 100 ms a second.
const audioContexts = [];
async function tones(frequencies) {
  const context = new AudioContext({ sampleRate: 48000 });
  audioContexts.push(context); // keep it (and its oscillators) alive
  await context.resume();
  return frequencies.map((frequency) => {
    const oscillator = new OscillatorNode(context, { frequency });
    const gain = new GainNode(context, { gain: 0.3 });
    const destination = new MediaStreamAudioDestinationNode(context, { channelCount: 1 });
    oscillator.connect(gain).connect(destination);
    oscillator.start();
    return destination.stream.getAudioTracks()[0];
  });
}

window.sfu = { SfuSession, SfuError, microphone, tones, sessions: {} };
