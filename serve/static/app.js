// iplap's page: plain JavaScript, no build step, nothing fetched from elsewhere.
// It talks to the service's HTTP API and its live WebSocket (see the README's table).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("iplap-token") || "", audio: null, recording: null };
// What the page has done, for tests and for curious users (window.iplap in the console).
window.iplap = { frames: 0, drawn: 0, end: null, errors: [], jobs: [] };

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
    await api("DELETE", "/api/avatars/" + id);
    await refreshAvatars();
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

// -- live sessions ---------------------------------------------------------------------------------

function audioContext() {
  if (!state.audio) state.audio = new AudioContext();
  return state.audio;
}

function liveSocket() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams({ avatar: chosenAvatar() });
  if (state.token) params.set("token", state.token);
  return new WebSocket(`${scheme}://${location.host}/api/live?${params}`);
}

// Frames arrive as rendered; they are drawn, and their audio played, on one clock, so picture
// and sound stay together even when rendering is slower than real time.
class Player {
  constructor(context, channels) {
    this.context = context;
    this.channels = channels;
    this.start = null; // context time at which media time 0 plays
    this.canvas = $("canvas");
    this.queue = [];
    this.draw = this.draw.bind(this);
    requestAnimationFrame(this.draw);
  }

  async add(header, jpeg, audio) {
    const now = this.context.currentTime;
    const lead = 0.15;
    if (this.start === null || this.start + header.audio_time < now) {
      this.start = now + lead - header.audio_time; // (re)anchor: late media plays from now
    }
    if (audio.byteLength) this.play(audio, this.start + header.audio_time);
    if (header.jpeg) {
      const bitmap = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
      this.queue.push({ at: this.start + header.time, bitmap });
      window.iplap.frames += 1;
    }
  }

  play(bytes, when) {
    const samples = new Float32Array(bytes.slice(0));
    const frames = samples.length / this.channels;
    const buffer = this.context.createBuffer(this.channels, frames, this.context.sampleRate);
    for (let c = 0; c < this.channels; c++) {
      const channel = buffer.getChannelData(c);
      for (let i = 0; i < frames; i++) channel[i] = samples[i * this.channels + c];
    }
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    source.start(Math.max(when, this.context.currentTime));
  }

  draw() {
    const now = this.context.currentTime;
    let latest = null;
    while (this.queue.length && this.queue[0].at <= now) latest = this.queue.shift();
    if (latest) {
      if (this.canvas.width !== latest.bitmap.width) {
        this.canvas.width = latest.bitmap.width;
        this.canvas.height = latest.bitmap.height;
      }
      this.canvas.getContext("2d").drawImage(latest.bitmap, 0, 0);
      window.iplap.drawn += 1;
    }
    if (!this.stopped || this.queue.length) requestAnimationFrame(this.draw);
  }
}

// Runs one live session: `feed(send)` sends the audio (Float32Array chunks), then resolves.
async function liveSession(sampleRate, channels, feed) {
  const context = audioContext();
  await context.resume();
  const socket = liveSocket();
  socket.binaryType = "arraybuffer";
  const player = new Player(context, channels);
  window.iplap.end = null;
  $("live-status").textContent = "connecting…";
  return new Promise((resolve, reject) => {
    socket.onerror = () => reject(new Error("the live connection failed"));
    socket.onopen = () => socket.send(JSON.stringify({ type: "start", sample_rate: sampleRate, channels, format: "f32le" }));
    socket.onmessage = async (event) => {
      if (typeof event.data === "string") {
        const message = JSON.parse(event.data);
        if (message.type === "ready") {
          $("live-status").textContent = "rendering live…";
          feed((chunk) => socket.send(chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength)))
            .then(() => socket.send(JSON.stringify({ type: "end" })), reject);
        } else if (message.type === "end") {
          window.iplap.end = message;
          player.stopped = true;
          $("live-status").textContent = `${message.frames} frames; first after ` +
            `${(message.first_frame_latency_s ?? 0).toFixed(2)} s, ${(message.fps ?? 0).toFixed(2)} fps` +
            (message.dropped_frames ? `, ${message.dropped_frames} dropped` : "");
          resolve(message);
        } else if (message.type === "error") {
          player.stopped = true;
          reject(new Error(message.message));
        }
        return;
      }
      const data = event.data;
      const length = new DataView(data).getUint32(0);
      const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, length)));
      const jpeg = new Uint8Array(data, 4 + length, header.jpeg);
      const audio = data.slice(4 + length + header.jpeg, 4 + length + header.jpeg + header.audio);
      await player.add(header, jpeg, audio);
    };
  });
}

function interleave(buffer) {
  const channels = Math.min(2, buffer.numberOfChannels);
  const data = [...Array(channels).keys()].map((c) => buffer.getChannelData(c));
  const out = new Float32Array(buffer.length * channels);
  for (let i = 0; i < buffer.length; i++) for (let c = 0; c < channels; c++) out[i * channels + c] = data[c][i];
  return { samples: out, channels };
}

async function liveFromFile() {
  say("");
  const file = $("speech-file").files[0];
  try {
    if (!file) throw new Error("Choose a speech file first.");
    const decoded = await audioContext().decodeAudioData(await file.arrayBuffer());
    const { samples, channels } = interleave(decoded);
    const step = Math.round(decoded.sampleRate / 10) * channels; // 100 ms chunks
    await liveSession(decoded.sampleRate, channels, async (send) => {
      for (let i = 0; i < samples.length; i += step) send(samples.subarray(i, i + step));
    });
  } catch (e) {
    say("Live: " + e.message);
  }
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
    await liveSession(context.sampleRate, 1, (send) => new Promise((resolve) => {
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
$("avatar-delete").addEventListener("click", deleteAvatar);
$("render").addEventListener("click", renderJob);
$("live-file").addEventListener("click", liveFromFile);
$("record").addEventListener("click", toggleRecording);
refreshHealth().then(() => refreshAvatars()).catch((e) => say(e.message));
