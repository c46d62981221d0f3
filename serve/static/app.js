// iplap's page: plain JavaScript, no build step, nothing fetched from elsewhere.
// It talks to the service's HTTP API and its live WebSocket (see the README's table).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("iplap-token") || "", audio: null, recording: null };
// What the page has done, for tests and for curious users (window.iplap in the console):
// frames received and drawn, the server's latest summary (`end`: a reply's stats, or the
// session's closing message), errors, jobs, and the live session's log (`live`, below).
window.iplap = { frames: 0, drawn: 0, end: null, errors: [], jobs: [], live: null };

function say(text) {
  $("message").textContent = text || "";
  if (text) window.iplap.errors.push(text);
}

async function api(method, path, body, retried) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const response = await fetch(path, { method, body, headers });
  if (response.status === 401 && !retried) {
    const token = window.prompt("This iplap service needs its token:");
    if (token) {
      state.token = token.trim();
      sessionStorage.setItem("iplap-token", state.token);
      return api(method, path, body, true);
    }
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setProgress(id, done, total) {
  const bar = $(id);
  bar.hidden = false;
  bar.firstElementChild.style.width = total ? Math.min(100, (100 * done) / total) + "%" : "10%";
}

// -- the server and its avatars ----------------------------------------------------------------

async function refreshHealth() {
  try {
    const health = await (await api("GET", "/api/health")).json();
    $("server").textContent = `iplap ${health.version} · ${health.backend} · N=${health.refs} · ` +
      `${health.slots.total} render slot(s)`;
  } catch (e) {
    $("server").textContent = "not connected: " + e.message;
  }
}

async function refreshAvatars(select) {
  const { avatars } = await (await api("GET", "/api/avatars")).json();
  const menu = $("avatar");
  const current = select || menu.value;
  menu.innerHTML = "";
  for (const a of avatars) {
    const option = document.createElement("option");
    option.value = a.id;
    const frames = a.frames ? `, ${a.frames} frame${a.frames === 1 ? "" : "s"}` : "";
    option.textContent = `${a.name} (${a.kind}, ${a.state}${frames})`;
    option.disabled = a.state !== "ready";
    menu.appendChild(option);
  }
  if (current && avatars.some((a) => a.id === current)) menu.value = current;
}

async function uploadFace() {
  const file = $("face-file").files[0];
  if (!file) return say("Choose a photo or a video of a face first.");
  say("");
  const form = new FormData();
  form.append("face", file);
  $("face-upload").disabled = true;
  try {
    let record = await (await api("POST", "/api/avatars", form)).json();
    while (record.state === "preparing") {
      setProgress("face-progress", record.frames_done, record.frames_total);
      await sleep(500);
      record = await (await api("GET", "/api/avatars/" + record.id)).json();
    }
    if (record.state === "failed") throw new Error(record.error);
    setProgress("face-progress", 1, 1);
    await refreshAvatars(record.id);
    openLive();
  } catch (e) {
    say("Face: " + e.message);
  } finally {
    $("face-upload").disabled = false;
  }
}

async function deleteAvatar() {
  const id = $("avatar").value;
  if (!id) return;
  try {
    closeLive();
    await api("DELETE", "/api/avatars/" + id);
    await refreshAvatars();
    openLive();
  } catch (e) { say(e.message); }
}

function chosenAvatar() {
  const id = $("avatar").value;
  if (!id) throw new Error("Upload or choose a face first.");
  return id;
}

// -- render jobs ---------------------------------------------------------------------------------

async function renderJob() {
  say("");
  const file = $("speech-file").files[0];
  try {
    if (!file) throw new Error("Choose a speech file first.");
    const form = new FormData();
    form.append("avatar", chosenAvatar());
    form.append("audio", file);
    let job = await (await api("POST", "/api/jobs", form)).json();
    window.iplap.jobs.push(job.id);
    $("download").hidden = true;
    while (job.state === "queued" || job.state === "running") {
      setProgress("job-progress", job.frames_done, job.frames_total);
      $("job-status").textContent = job.state === "queued" ? "waiting for a render slot…" :
        `rendering: ${job.frames_done} / ${job.frames_total ?? "?"} frames` + (job.fps ? `, ${job.fps.toFixed(2)} fps` : "");
      await sleep(500);
      job = await (await api("GET", "/api/jobs/" + job.id)).json();
    }
    if (job.state !== "done") throw new Error(`the job is ${job.state}` + (job.error ? ": " + job.error : ""));
    setProgress("job-progress", 1, 1);
    const video = await (await api("GET", `/api/jobs/${job.id}/video`)).blob();
    const link = $("download");
    link.href = URL.createObjectURL(video);
    link.download = `iplap-${job.id}.mp4`;
    link.hidden = false;
    $("job-status").textContent = `done: ${job.frames_total} frames`;
  } catch (e) {
    say("Render: " + e.message);
  }
}

// -- the live avatar ---------------------------------------------------------------------------------
// A continuous session (/api/live?mode=continuous) is open while an avatar is chosen: the
// server sends 25 frames a second, the avatar idling until speech is sent as a turn (a file,
// or the microphone until "Stop recording"); "Interrupt" cuts the reply short.

const LEAD_MS = 100; // a frame is drawn this long after it arrives, so that jitter does not show
const LOG_FRAMES = 3000; // frames kept in window.iplap.live.log

function audioContext() {
  if (!state.audio) state.audio = new AudioContext();
  return state.audio;
}

// Pictures drawn on the page's clock (performance.now), each frame's audio scheduled on the
// audio clock at the same moment; speech that follows on without a gap plays back to back.
class Player {
  constructor(context, channels, sampleRate) {
    this.context = context;
    this.channels = channels;
    this.sampleRate = sampleRate; // the session's, as its start message said
    this.anchor = null; // page time (ms) at which session time 0 is drawn
    this.nextAudio = null; // audio time at which the speech scheduled so far ends
    this.sources = new Set();
    this.queue = [];
    this.canvas = $("canvas");
    this.draw = this.draw.bind(this);
    requestAnimationFrame(this.draw);
  }

  add(header, jpeg, audio) {
    const now = performance.now();
    if (this.urgent) { // the first frame after an interrupt is drawn at once
      this.anchor = now - header.time * 1000;
      this.urgent = false;
    } else if (this.anchor === null || this.anchor + header.time * 1000 < now) {
      this.anchor = now + LEAD_MS - header.time * 1000; // (re)anchor: a late frame is drawn from now
    }
    const entry = { at: this.anchor + header.time * 1000, bitmap: null, speaking: header.speaking };
    this.queue.push(entry);
    createImageBitmap(new Blob([jpeg], { type: "image/jpeg" })).then((bitmap) => { entry.bitmap = bitmap; });
    if (audio.byteLength) this.play(audio, entry.at - now, audio.byteLength / 4 / this.channels);
  }

  play(bytes, inMs, frames) {
    const context = this.context;
    let when = context.currentTime + Math.max(0, inMs) / 1000;
    if (this.nextAudio !== null && Math.abs(when - this.nextAudio) < 0.05) when = this.nextAudio;
    const samples = new Float32Array(bytes);
    const buffer = context.createBuffer(this.channels, frames, this.sampleRate);
    for (let c = 0; c < this.channels; c++) {
      const channel = buffer.getChannelData(c);
      for (let i = 0; i < frames; i++) channel[i] = samples[i * this.channels + c];
    }
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    source.onended = () => this.sources.delete(source);
    this.sources.add(source);
    source.start(Math.max(when, context.currentTime));
    this.nextAudio = Math.max(when, context.currentTime) + buffer.duration;
  }

  // An interrupt: the speech scheduled stops now, the pictures of the reply are not drawn,
  // and the idle frames that follow are drawn as they come.
  flush() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.nextAudio = null;
    this.queue = this.queue.filter((entry) => !entry.speaking);
    this.urgent = true;
  }

  draw() {
    const now = performance.now();
    let latest = null;
    while (this.queue.length && this.queue[0].at <= now && this.queue[0].bitmap) latest = this.queue.shift();
    if (latest) {
      if (this.canvas.width !== latest.bitmap.width) {
        this.canvas.width = latest.bitmap.width;
        this.canvas.height = latest.bitmap.height;
      }
      this.canvas.getContext("2d").drawImage(latest.bitmap, 0, 0);
      window.iplap.drawn += 1;
      const live = window.iplap.live;
      if (!latest.speaking && live.interruptedAt !== null && live.idleDrawnAt === null) live.idleDrawnAt = now;
    }
    if (!this.stopped) requestAnimationFrame(this.draw);
  }
}

let live = null; // the open session: { socket, player, ready (a promise), avatar }

function showStats(message) {
  const latency = message.mean_latency_s === null ? "–" : message.mean_latency_s.toFixed(2) + " s";
  $("live-stats").textContent = `replies: ${message.turns} played, ${message.interrupted} interrupted · ` +
    `latency ${latency} · real-time factor ${message.real_time_factor.toFixed(2)} (k=${message.k}) · ` +
    `${message.held_frames} held, ${message.dropped_frames} dropped of ${message.frames} frames`;
}

function onLiveText(session, message) {
  const log = window.iplap.live;
  if (message.type === "ready") {
    log.ready = message;
    session.resolveReady();
    $("live-status").textContent = "live: idle";
  } else if (message.type === "playback_started" || message.type === "playback_finished") {
    log.events.push({ ...message, at: performance.now() });
    $("live-status").textContent = message.type === "playback_started" ? `live: speaking (reply ${message.turn})` :
      `live: idle (reply ${message.turn} ${message.interrupted ? "interrupted" : "done"})`;
  } else if (message.type === "stats" || message.type === "end") {
    window.iplap.end = message;
    showStats(message);
  } else if (message.type === "error") {
    session.failed = message.message;
  }
}

function onLiveFrame(session, data) {
  const length = new DataView(data).getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, length)));
  const jpeg = new Uint8Array(data, 4 + length, header.jpeg);
  const audio = data.slice(4 + length + header.jpeg, 4 + length + header.jpeg + header.audio);
  const log = window.iplap.live;
  const at = performance.now();
  log.log.push({ index: header.index, speaking: header.speaking, turn: header.turn, held: header.held, at });
  if (log.log.length > LOG_FRAMES) log.log.splice(0, log.log.length - LOG_FRAMES);
  if (!header.speaking && log.interruptedAt !== null && log.idleAt === null) log.idleAt = at;
  window.iplap.frames += 1;
  session.player.add(header, jpeg, audio);
}

// Open a continuous session for the chosen avatar (closing the one before); `retries`: how
// often to try again while the server's render slots are busy (the last session's may be
// freeing).
function openLive(retries = 5) {
  const menu = $("avatar");
  const option = menu.selectedOptions[0];
  if (!option || option.disabled) return closeLive();
  if (live && live.avatar === menu.value && !live.closed) return;
  closeLive();
  const context = audioContext();
  const params = new URLSearchParams({ avatar: menu.value, mode: "continuous" });
  if (state.token) params.set("token", state.token);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/live?${params}`);
  socket.binaryType = "arraybuffer";
  const session = { socket, avatar: menu.value, player: new Player(context, 1, context.sampleRate), closed: false, failed: null };
  session.ready = new Promise((resolve, reject) => { session.resolveReady = resolve; session.rejectReady = reject; });
  session.ready.catch(() => {}); // a session that never got ready is reported once, on close
  live = session;
  window.iplap.end = null;
  window.iplap.live = { ready: null, log: [], events: [], interruptedAt: null, idleAt: null, idleDrawnAt: null };
  $("live-status").textContent = "live: connecting…";
  socket.onopen = () => socket.send(JSON.stringify({ type: "start", sample_rate: context.sampleRate, channels: 1,
                                                    format: "f32le" }));
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onLiveText(session, JSON.parse(event.data));
    else onLiveFrame(session, event.data);
  };
  socket.onclose = () => {
    session.closed = true;
    session.player.stopped = true;
    session.rejectReady(new Error(session.failed || "the live connection closed"));
    if (live !== session) return;
    if (session.failed && session.failed.includes("slots are busy") && retries > 0) {
      live = null;
      setTimeout(() => openLive(retries - 1), 1000);
      return;
    }
    if (session.failed) say("Live: " + session.failed);
    $("live-status").textContent = "live: closed";
  };
}

function closeLive() {
  if (!live) return;
  const session = live;
  live = null;
  if (session.socket.readyState === WebSocket.OPEN) session.socket.send(JSON.stringify({ type: "end" }));
  else session.socket.close();
}

async function liveSession() {
  if (!live || live.closed) openLive();
  if (!live) throw new Error("Upload or choose a face first.");
  await audioContext().resume();
  await live.ready;
  return live;
}

// One reply: `feed(send)` sends its speech (mono Float32Array chunks at the audio clock's rate).
async function speak(feed) {
  const session = await liveSession();
  const send = (chunk) => session.socket.send(chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength));
  await feed(send);
  session.socket.send(JSON.stringify({ type: "turn_end" }));
}

function mono(buffer) {
  const out = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < buffer.length; i++) out[i] += data[i] / buffer.numberOfChannels;
  }
  return out;
}

async function speakFile() {
  say("");
  const file = $("speech-file").files[0];
  try {
    if (!file) throw new Error("Choose a speech file first.");
    const decoded = await audioContext().decodeAudioData(await file.arrayBuffer()); // at the clock's rate
    const samples = mono(decoded);
    const step = Math.round(decoded.sampleRate / 10); // 100 ms chunks
    await speak(async (send) => {
      for (let i = 0; i < samples.length; i += step) send(samples.subarray(i, i + step));
    });
  } catch (e) {
    say("Live: " + e.message);
  }
}

function interrupt() {
  if (!live || live.closed || live.socket.readyState !== WebSocket.OPEN) return;
  const log = window.iplap.live;
  log.interruptedAt = performance.now();
  log.idleAt = log.idleDrawnAt = null;
  live.socket.send(JSON.stringify({ type: "interrupt" }));
  live.player.flush();
  if (state.recording) state.recording.stop();
}

async function toggleRecording() {
  if (state.recording) {
    state.recording.stop();
    return;
  }
  say("");
  try {
    chosenAvatar();
    const context = audioContext();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    await context.audioWorklet.addModule("/static/mic-worklet.js");
    const source = context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(context, "mic-capture");
    source.connect(capture);
    $("record").textContent = "Stop recording";
    await speak((send) => new Promise((resolve) => {
      capture.port.onmessage = (event) => send(event.data);
      state.recording = {
        stop() {
          source.disconnect();
          stream.getTracks().forEach((t) => t.stop());
          resolve();
        },
      };
    }));
  } catch (e) {
    say("Microphone: " + e.message);
  } finally {
    state.recording = null;
    $("record").textContent = "Record from microphone";
  }
}

$("face-upload").addEventListener("click", uploadFace);
$("avatar").addEventListener("change", () => openLive());
$("avatar-delete").addEventListener("click", deleteAvatar);
$("render").addEventListener("click", renderJob);
$("live-file").addEventListener("click", speakFile);
$("record").addEventListener("click", toggleRecording);
$("interrupt").addEventListener("click", interrupt);
refreshHealth().then(() => refreshAvatars()).then(() => openLive()).catch((e) => say(e.message));
