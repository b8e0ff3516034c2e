// Rendering: the lobby, the controls, the participant list (updated in place, so a volume
// slider keeps focus while the room changes), status and connection quality. DOM APIs only,
// never innerHTML: the page runs under Trusted Types, and names are shown as text.

const QUALITY_TEXT = { good: "Good", fair: "Fair", poor: "Poor", offline: "Offline", checking: "checking…" };
const KIND_TEXT = { discord: "Discord", web: "Web", other: "Other" };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hue-${h % 8}`;
}

function initials(name) {
  const words = name.replace(/^#/, "").trim().split(/\s+/).filter(Boolean);
  const letters = words.slice(0, 2).map((w) => [...w][0]).join("");
  return (letters || "?").toUpperCase();
}

export class RoomView {
  constructor(doc = document) {
    const $ = (id) => doc.getElementById(id);
    this.doc = doc;
    this.title = $("room-title");
    this.status = $("status");
    this.alert = $("alert");
    this.lobby = $("lobby");
    this.inviteInfo = $("invite-info");
    this.form = $("join-form");
    this.nameInput = $("name");
    this.processing = $("processing");
    this.joinButton = $("join");
    this.listenButton = $("join-listen");
    this.call = $("call");
    this.muteButton = $("mute");
    this.muteLabel = $("mute-label");
    this.leaveButton = $("leave");
    this.micMeter = $("mic-level");
    this.micBlock = $("mic-block");
    this.listenerNote = $("listener-note");
    this.quality = $("quality");
    this.qualityText = $("quality-text");
    this.qualityDetail = $("quality-detail");
    this.members = $("members");
    this.peopleCount = $("people-count");
    this.ended = $("ended");
    this.endedText = $("ended-text");
    this.rejoinButton = $("rejoin");
    this.memberNodes = new Map();
    this.lastQuality = null;
  }

  setRoom(room) {
    this.title.textContent = room;
    this.doc.title = `${room} · Switchboard`;
  }

  setStatus(text) {
    if (this.status.textContent !== text) this.status.textContent = text;
  }

  showAlert(text) {
    this.alert.textContent = text;
    this.alert.hidden = !text;
  }

  showLobby({ role, expiresAt, canJoin }) {
    this.lobby.hidden = false;
    this.call.hidden = true;
    this.ended.hidden = true;
    const parts = [];
    if (role === "listener") parts.push("You are invited to listen.");
    else if (role === "speaker") parts.push("You are invited to talk and listen.");
    if (expiresAt) {
      const when = new Date(expiresAt * 1000);
      parts.push(`The invite is valid until ${when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}.`);
    }
    this.inviteInfo.textContent = parts.join(" ");
    this.joinButton.disabled = !canJoin;
    this.listenButton.disabled = !canJoin;
    this.listenButton.hidden = role === "listener";
    this.joinButton.textContent = role === "listener" ? "Join and listen" : "Join with microphone";
  }

  offerListening(show) {
    this.listenButton.hidden = !show;
  }

  setBusy(busy) {
    this.joinButton.disabled = busy;
    this.listenButton.disabled = busy;
    this.form.setAttribute("aria-busy", String(busy));
  }

  showCall({ canTalk }) {
    this.lobby.hidden = true;
    this.ended.hidden = true;
    this.call.hidden = false;
    this.micBlock.hidden = !canTalk;
    this.listenerNote.hidden = canTalk;
    this.quality.hidden = false;
    this.setQuality(null);
  }

  showEnded(text) {
    this.lobby.hidden = true;
    this.call.hidden = true;
    this.ended.hidden = false;
    this.quality.hidden = true;
    this.endedText.textContent = text;
    this.rejoinButton.focus();
  }

  setMuted(muted) {
    this.muteButton.setAttribute("aria-pressed", String(muted));
    this.muteLabel.textContent = muted ? "Unmute" : "Mute";
    this.muteButton.classList.toggle("is-muted", muted);
  }

  setMicLevel(level) {
    // CSSOM custom property: allowed under the page's style-src 'self' (no inline styles).
    this.micMeter.style.setProperty("--level", level.toFixed(3));
  }

  setQuality(quality) {
    const level = quality ? quality.level : "checking";
    this.quality.dataset.level = level;
    this.qualityText.textContent = QUALITY_TEXT[level];
    const detail = quality && quality.connected
      ? `${Math.round(quality.rttMs)} ms · ${(quality.lossRatio * 100).toFixed(1)}% loss · ${Math.round(quality.jitterMs)} ms jitter`
      : "";
    this.qualityDetail.textContent = detail;
    this.quality.title = detail ? `Connection ${QUALITY_TEXT[level].toLowerCase()}: ${detail}` : "";
    if (!quality) {
      this.lastQuality = null;
      return null;
    }
    const announce = this.lastQuality !== null && this.lastQuality !== level && (level === "poor" || this.lastQuality === "poor");
    this.lastQuality = level;
    return announce ? `Connection quality is ${QUALITY_TEXT[level].toLowerCase()}.` : null;
  }

  // members: Map of {id, kind, name, tracks: Map<key, track>, speaking: Set<trackName>}
  renderMembers(members, { me, muted, volumeOf, onVolume, pullStates }) {
    const seen = new Set();
    let people = 0;
    const ordered = [...members.values()].sort((a, b) =>
      (a.id === me ? -1 : b.id === me ? 1 : 0) ||
      (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === "discord" ? -1 : 1));
    for (const member of ordered) {
      seen.add(member.id);
      let node = this.memberNodes.get(member.id);
      if (!node) {
        node = this.createMember(member);
        this.memberNodes.set(member.id, node);
      }
      this.members.append(node.root); // keeps order; moves existing nodes
      people += this.updateMember(node, member, { me, muted, volumeOf, onVolume, pullStates });
    }
    for (const [id, node] of this.memberNodes) {
      if (!seen.has(id)) {
        node.root.remove();
        this.memberNodes.delete(id);
      }
    }
    this.peopleCount.textContent = people === 1 ? "1 person" : `${people} people`;
  }

  createMember(member) {
    const root = el("li", `member kind-${member.kind}`);
    root.dataset.memberId = member.id;
    const head = el("div", "member-head");
    const badge = el("span", `badge badge-${member.kind}`, KIND_TEXT[member.kind] || member.kind);
    const name = el("h3", "member-name", member.name);
    head.append(badge, name);
    const list = el("ul", "people");
    list.setAttribute("aria-label", member.name);
    root.append(head, list);
    return { root, head, name, list, rows: new Map() };
  }

  updateMember(node, member, options) {
    const isMe = member.id === options.me;
    node.name.textContent = isMe ? `${member.name} (you)` : member.name;
    node.root.classList.toggle("is-me", isMe);
    const web = member.kind === "web";
    node.head.hidden = web; // a web member is one person: its row says it all
    const rows = [];
    if (member.tracks.size === 0) {
      const listening = member.moderatorMuted ? "Muted by a moderator" : "Listening";
      const text = web ? listening : "No one has spoken yet";
      rows.push({ key: "-", name: web ? member.name : text, placeholder: !web, note: web ? text : "" });
    }
    for (const [key, track] of member.tracks) {
      rows.push({
        key,
        name: track.name || member.name,
        trackName: track.trackName,
        speaking: member.speaking.has(track.trackName) && !(isMe && options.muted),
        pull: options.pullStates.get(key),
      });
    }
    const seen = new Set();
    for (const row of rows) {
      seen.add(row.key);
      let view = node.rows.get(row.key);
      if (!view) {
        view = this.createRow(member, row, { isMe, web, onVolume: options.onVolume, volumeOf: options.volumeOf });
        node.rows.set(row.key, view);
      }
      node.list.append(view.root);
      this.updateRow(view, row, { isMe, web, muted: options.muted });
    }
    for (const [key, view] of node.rows) {
      if (!seen.has(key)) {
        view.root.remove();
        node.rows.delete(key);
      }
    }
    return rows.filter((row) => !row.placeholder).length;
  }

  createRow(member, row, { isMe, web, onVolume, volumeOf }) {
    const root = el("li", "person");
    if (row.placeholder) {
      root.classList.add("placeholder");
      const text = el("span", "person-note", row.name);
      root.append(text);
      return { root, text, placeholder: true };
    }
    const avatar = el("span", `avatar ${hue(row.name)}`, initials(row.name));
    avatar.setAttribute("aria-hidden", "true");
    const info = el("span", "person-info");
    const name = el("span", "person-name", row.name);
    const state = el("span", "person-state");
    info.append(name);
    if (web) info.append(el("span", "badge badge-web", "Web"));
    info.append(state);
    const wave = el("span", "wave");
    wave.setAttribute("aria-hidden", "true");
    wave.append(el("i"), el("i"), el("i"));
    root.append(avatar, info, wave);
    let slider = null;
    if (!isMe && row.trackName) {
      const label = el("label", "volume");
      const text = el("span", "visually-hidden", `Volume for ${row.name}`);
      slider = el("input");
      slider.type = "range";
      slider.min = "0";
      slider.max = "100";
      slider.step = "5";
      slider.value = String(Math.round(volumeOf(member.id, row.trackName) * 100));
      slider.setAttribute("aria-valuetext", `${slider.value}%`);
      slider.addEventListener("input", () => {
        slider.setAttribute("aria-valuetext", `${slider.value}%`);
        onVolume(member.id, row.trackName, Number(slider.value) / 100);
      });
      label.append(text, slider);
      root.append(label);
    }
    return { root, name, state, avatar, slider, placeholder: false };
  }

  updateRow(view, row, { isMe, muted }) {
    if (view.placeholder) {
      view.text.textContent = row.name;
      return;
    }
    view.name.textContent = isMe ? `${row.name} (you)` : row.name;
    view.root.classList.toggle("speaking", Boolean(row.speaking));
    let state = "";
    if (row.speaking) state = "Speaking";
    else if (isMe && muted) state = "Muted";
    else if (row.note) state = row.note;
    else if (row.pull === "failed") state = "Audio unavailable";
    else if (row.pull === "pending" || row.pull === "retrying") state = "Connecting audio…";
    view.state.textContent = state;
    view.root.dataset.speaking = String(Boolean(row.speaking));
  }
}
