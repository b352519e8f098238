// The farm's web page: plain JavaScript, no build step, nothing fetched from anywhere but the farm itself.
// API paths are relative to the page (/ui), so the page also works behind a proxy that adds a path prefix.
"use strict";

const KEY_STORAGE = "xtts-farm-api-key";
const JOB_POLL_MS = 500;
const START_LEAD_SECONDS = 0.1; // first block starts this late, so the next read has time to arrive

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------------------------
// Talking to the farm: the API key, and its one JSON error contract.

class FarmError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function farmError(response) {
  try {
    const body = await response.json();
    const e = body.error;
    return new FarmError(e.status, e.code, e.message);
  } catch {
    return new FarmError(response.status, "http_" + response.status, response.statusText || "request failed");
  }
}

function showError(element, err) {
  element.textContent = err ? (err.code ? `${err.message} (${err.code})` : String(err.message || err)) : "";
}

let keyRequest = null; // one question at a time, whatever number of requests were refused

function askForKey(reason) {
  if (!keyRequest) {
    keyRequest = new Promise((resolve) => {
      const form = $("key-form");
      $("key-reason").textContent = reason;
      form.hidden = false;
      $("key-input").value = "";
      $("key-input").focus();
      form.onsubmit = (event) => {
        event.preventDefault();
        localStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
        form.hidden = true;
        keyRequest = null;
        resolve();
      };
    });
  }
  return keyRequest;
}

// fetch() with the stored key; on a 401 the page asks for a key and sends the request again.
async function api(path, options = {}) {
  for (;;) {
    const key = localStorage.getItem(KEY_STORAGE);
    const headers = new Headers(options.headers || {});
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) {
      const err = await farmError(response);
      await askForKey(err.message);
      continue;
    }
    if (!response.ok) throw await farmError(response);
    return response;
  }
}

const apiJson = async (path, options) => (await api(path, options)).json();

// ---------------------------------------------------------------------------------------------------------------
// Streaming playback: a WAV arrives over fetch's ReadableStream; its PCM is scheduled block by block on an
// AudioContext as it comes, so the first words play while the rest is synthesized.

// Finds the WAV header's end (the "data" chunk) and the format; null until enough bytes have arrived.
function parseWavHeader(bytes) {
  if (bytes.length < 12) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
  if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("the farm did not send a WAV stream");
  let at = 12;
  let format = null;
  while (at + 8 <= bytes.length) {
    const id = tag(at);
    const size = view.getUint32(at + 4, true);
    if (id === "data") {
      if (!format) throw new Error("WAV stream without a fmt chunk");
      return { ...format, dataOffset: at + 8 };
    }
    if (id === "fmt ") {
      if (at + 8 + 16 > bytes.length) return null;
      format = {
        channels: view.getUint16(at + 10, true),
        sampleRate: view.getUint32(at + 12, true),
        bitsPerSample: view.getUint16(at + 22, true),
      };
      if (format.bitsPerSample !== 16) throw new Error("only 16-bit PCM WAV can be streamed");
    }
    at += 8 + size + (size % 2);
  }
  return null;
}

// Bytes in, whole 16-bit samples out: a read may end in the middle of a sample (or of the header).
class PcmAssembler {
  constructor() {
    this.pending = new Uint8Array(0);
    this.format = null;
  }

  push(chunk) {
    const bytes = new Uint8Array(this.pending.length + chunk.length);
    bytes.set(this.pending);
    bytes.set(chunk, this.pending.length);
    let start = 0;
    if (!this.format) {
      this.format = parseWavHeader(bytes);
      if (!this.format) {
        this.pending = bytes;
        return new Int16Array(0);
      }
      start = this.format.dataOffset;
    }
    const whole = (bytes.length - start) & ~1;
    const samples = new Int16Array(whole / 2);
    const view = new DataView(bytes.buffer, start, whole);
    for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true);
    this.pending = bytes.slice(start + whole);
    return samples;
  }
}

// Schedules PCM blocks back to back on one AudioContext, and says how much of them has played, by its clock.
class StreamPlayer {
  constructor(sampleRate) {
    this.context = new AudioContext({ sampleRate });
    this.sampleRate = sampleRate;
    this.blocks = []; // [start time, duration] of each scheduled block, in order
    this.scheduledSamples = 0;
    this.endedSamples = 0;
    this.nextStart = 0;
  }

  schedule(samples) {
    if (!samples.length) return;
    const buffer = this.context.createBuffer(1, samples.length, this.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // After an underrun (synthesis slower than playback) the next block starts now, not in the past.
    const start = Math.max(this.nextStart, this.context.currentTime + START_LEAD_SECONDS);
    // "ended" fires only once the block has really played through the audio graph, by the context's clock.
    source.addEventListener("ended", () => (this.endedSamples += samples.length));
    source.start(start);
    this.blocks.push([start, buffer.duration]);
    this.nextStart = start + buffer.duration;
    this.scheduledSamples += samples.length;
  }

  // Seconds of audio played so far: only blocks' time counts, not the gaps of an underrun.
  played() {
    const now = this.context.currentTime;
    let total = 0;
    for (const [start, duration] of this.blocks) {
      if (now <= start) break;
      total += Math.min(now - start, duration);
    }
    return total;
  }

  finished() {
    return this.endedSamples === this.scheduledSamples && this.context.currentTime >= this.nextStart;
  }

  close() {
    this.context.close();
  }
}

let playback = null; // {player, abort}

function setPlayerState(state) {
  $("player").dataset.state = state;
  $("player-state").textContent = state;
}

function showPlayerTime() {
  const el = $("player");
  if (playback && playback.player) {
    const { player } = playback;
    const played = player.played();
    el.dataset.playedSeconds = played.toFixed(3);
    el.dataset.scheduledSamples = String(player.scheduledSamples);
    el.dataset.blocks = String(player.blocks.length);
    el.dataset.endedSamples = String(player.endedSamples);
    $("elapsed").textContent = `${played.toFixed(1)} s`;
    $("received").textContent = `${(player.scheduledSamples / player.sampleRate).toFixed(1)} s`;
    if (playback.received && player.finished()) {
      setPlayerState("played");
      $("stop").disabled = true;
      playback = { ...playback, player: null, done: player };
      return;
    }
  }
  if (playback && playback.player) requestAnimationFrame(showPlayerTime);
}

function stopPlayback() {
  if (!playback) return;
  playback.abort.abort(); // the farm sees the client leave and cancels the job
  if (playback.player) playback.player.close();
  if (playback.done) playback.done.close();
  playback = null;
}

// The voice, or a blend of two (shared/blends.py: "first:0.7+second:0.3").
function chosenVoice() {
  const first = $("voice").value;
  const second = $("blend-voice").value;
  if (!second || second === first) return first;
  const share = Math.min(95, Math.max(5, Number($("blend-weight").value) || 50));
  return `${first}:${share / 100}+${second}:${(100 - share) / 100}`;
}

function speechRequest() {
  return {
    text: $("text").value,
    language: $("language").value,
    speaker_id: chosenVoice(),
  };
}

// What the farm will say, segment by segment (POST /v1/text/normalize): text, pauses, other voices and languages.
async function previewSpeech() {
  showError($("speak-error"), null);
  const request = speechRequest();
  try {
    const answer = await apiJson("v1/text/normalize", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ input: request.text, language: request.language, voice: request.speaker_id }),
    });
    $("spoken-segments").replaceChildren(...answer.segments.map((s) => spokenItem(s, request)));
    $("spoken-warnings").replaceChildren(
      ...answer.warnings.map((warning) => {
        const item = document.createElement("li");
        item.textContent = warning;
        return item;
      }),
    );
    $("spoken").hidden = false;
  } catch (err) {
    $("spoken").hidden = true;
    showError($("speak-error"), err);
  }
}

function spokenItem(segment, request) {
  const item = document.createElement("li");
  if (segment.pause_ms) {
    item.textContent = `(pause of ${segment.pause_ms} ms)`;
    item.className = "pause";
    return item;
  }
  const notes = [];
  if (segment.voice && segment.voice !== request.speaker_id) notes.push(`voice ${segment.voice}`);
  if (segment.language !== request.language) notes.push(`language ${segment.language}`);
  if (segment.speed) notes.push(`speed ${segment.speed}`);
  item.textContent = notes.length ? `${segment.text} [${notes.join(", ")}]` : segment.text;
  return item;
}

async function speak(event) {
  event.preventDefault();
  stopPlayback();
  showError($("speak-error"), null);
  const abort = new AbortController();
  // Made inside the click, so that the browser lets it play; the farm streams 24 kHz.
  playback = { abort, player: new StreamPlayer(24000), received: false };
  const current = playback;
  Object.assign($("player").dataset, {
    scheduledSamples: "0",
    endedSamples: "0",
    playedSeconds: "0",
    blocks: "0",
    job: "",
  });
  $("stop").disabled = false;
  setPlayerState("waiting");
  requestAnimationFrame(showPlayerTime);
  try {
    const response = await api("tts_stream", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(speechRequest()),
      signal: abort.signal,
    });
    $("stream-job").textContent = `job ${response.headers.get("X-Session-Id") || ""}`;
    $("player").dataset.job = response.headers.get("X-Session-Id") || "";
    const reader = response.body.getReader();
    const pcm = new PcmAssembler();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const samples = pcm.push(value);
      if (samples.length) {
        if (pcm.format.sampleRate !== current.player.sampleRate || pcm.format.channels !== 1) {
          throw new Error(`unexpected audio format ${pcm.format.sampleRate} Hz, ${pcm.format.channels} channels`);
        }
        current.player.schedule(samples);
        setPlayerState("playing");
      }
    }
    current.received = true;
  } catch (err) {
    if (abort.signal.aborted) {
      setPlayerState("stopped");
      return;
    }
    showError($("speak-error"), err);
    setPlayerState("failed");
    $("stop").disabled = true;
    current.player.close();
    if (playback === current) playback = null;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Jobs: queue, watch progress by polling GET /jobs/{id}, cancel, then play or download the whole WAV.

const FINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);
let watchedJob = null;

function showJob(job) {
  const p = job.progress;
  $("job-id").textContent = job.id;
  $("job-state").textContent = job.state;
  $("job-progress").max = Math.max(p.segments_total, 1);
  $("job-progress").value = p.segments_done;
  $("job-figures").textContent =
    `${p.segments_done} of ${p.segments_total} segments, ${p.audio_seconds.toFixed(1)} s of audio`;
  $("job-cancel").disabled = FINAL_STATES.has(job.state);
  if (job.error) $("job-error").textContent = job.error;
}

async function showJobAudio(job) {
  const blob = await (await api(`jobs/${encodeURIComponent(job.id)}/audio`)).blob();
  const url = URL.createObjectURL(blob);
  $("job-audio").src = url;
  $("job-audio").hidden = false;
  $("job-download").href = url;
  $("job-download").hidden = false;
}

async function watchJob(jobId) {
  while (watchedJob === jobId) {
    const job = await apiJson(`jobs/${encodeURIComponent(jobId)}`);
    if (watchedJob !== jobId) return;
    showJob(job);
    if (FINAL_STATES.has(job.state)) {
      if (job.state === "succeeded") await showJobAudio(job);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
  }
}

async function queueJob() {
  const form = $("speak-form");
  if (!form.reportValidity()) return;
  showError($("speak-error"), null);
  showError($("job-error"), null);
  $("job-audio").hidden = true;
  $("job-download").hidden = true;
  try {
    const created = await apiJson("jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(speechRequest()),
    });
    // Named before it is shown: its Cancel button may be pressed before the first poll answers.
    $("job-id").textContent = created.id;
    $("job-state").textContent = created.state;
    $("job-cancel").disabled = false;
    $("job").hidden = false;
    watchedJob = created.id;
    await watchJob(created.id);
  } catch (err) {
    showError($("job").hidden ? $("speak-error") : $("job-error"), err);
  }
}

async function cancelJob() {
  const jobId = $("job-id").textContent;
  try {
    showJob(await apiJson(`jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" }));
  } catch (err) {
    showError($("job-error"), err);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Languages, speakers and saved voices.

async function loadLanguages() {
  const languages = await apiJson("languages");
  const select = $("language");
  select.replaceChildren(...languages.map((code) => new Option(code, code, code === "en", code === "en")));
  $("book-language").replaceChildren(new Option("(the document's)", ""), ...languages.map((code) => new Option(code, code)));
}

async function loadSpeakers() {
  const { speakers } = await apiJson("available_speakers");
  $("builtin-voices").replaceChildren(...speakers.map((name) => new Option(name, name)));
  $("blend-builtin-voices").replaceChildren(...speakers.map((name) => new Option(name, name)));
  $("book-builtin-voices").replaceChildren(...speakers.map((name) => new Option(name, name)));
}

const PER_PAGE = 500;

async function loadVoices() {
  showError($("voices-error"), null);
  const page = await apiJson(`saved_voices?per_page=${PER_PAGE}`);
  const chosen = $("voice").value;
  $("voices-total").textContent =
    page.total > page.voices.length ? `(${page.voices.length} of ${page.total})` : `(${page.total})`;
  $("saved-voices").replaceChildren(...page.voices.map(voiceItem));
  const options = () => page.voices.map((v) => new Option(v.name ? `${v.name} (${v.id})` : v.id, v.id));
  const blended = $("blend-voice").value;
  $("saved-voice-options").replaceChildren(...options());
  $("blend-saved-voices").replaceChildren(...options());
  $("book-saved-voices").replaceChildren(...options());
  if (chosen) $("voice").value = chosen;
  $("blend-voice").value = blended;
}

function voiceItem(voice) {
  const item = document.createElement("li");
  item.dataset.voiceId = voice.id;
  const label = document.createElement("span");
  label.textContent = voice.name ? `${voice.name} (${voice.id})` : voice.id;
  if (voice.description) label.title = voice.description;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "secondary";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete voice ${voice.id}`);
  remove.addEventListener("click", () => deleteVoice(voice.id));
  item.append(label, remove);
  return item;
}

async function deleteVoice(voiceId) {
  try {
    await api(`saved_voices/${encodeURIComponent(voiceId)}`, { method: "DELETE" });
    await loadVoices();
  } catch (err) {
    showError($("voices-error"), err);
  }
}

async function cloneVoice(event) {
  event.preventDefault();
  showError($("clone-error"), null);
  const file = $("sample").files[0];
  const options = {
    response_format: "save",
    save_id: $("voice-id").value.trim(),
    name: $("voice-name").value,
    description: $("voice-description").value,
    overwrite: $("voice-overwrite").checked,
  };
  const body = new FormData();
  body.append("wav_file", file, file.name);
  body.append("options", JSON.stringify(options));
  $("clone").disabled = true;
  $("clone-status").textContent = "Cloning…";
  try {
    const result = await apiJson("clone_speaker", { method: "POST", body });
    $("clone-status").textContent =
      `Saved voice ${result.voice.id} from ${result.reference_seconds.toFixed(1)} s of audio` +
      (result.reused ? " (the same sample was cloned before: its result was reused)." : ".");
    await loadVoices();
  } catch (err) {
    $("clone-status").textContent = "";
    showError($("clone-error"), err);
  } finally {
    $("clone").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Books: a document sent as a file, followed chapter by chapter; a finished book's chapters played, its sentences
// played and said again, the M4B downloaded.

const BOOK_POLL_MS = 1000;
let watchedBook = null;

function showTab(name) {
  for (const tab of ["speech", "books"]) {
    const chosen = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(chosen));
    $(`${tab}-panel`).hidden = !chosen;
  }
}

async function sendBook(event) {
  event.preventDefault();
  if (!$("book-form").reportValidity()) return;
  showError($("book-form-error"), null);
  const options = { voice: $("book-voice").value };
  if ($("book-language").value) options.language = $("book-language").value;
  const form = new FormData();
  form.append("file", $("book-file").files[0]);
  form.append("options", JSON.stringify(options));
  try {
    const created = await apiJson("books", { method: "POST", body: form });
    $("book-id").textContent = created.id;
    $("book-name").textContent = created.title;
    $("book-state").textContent = "queued";
    $("book-sentences").replaceChildren();
    $("book-sentences-title").hidden = true;
    $("book-audio").hidden = true;
    $("book-download").hidden = true;
    $("book").hidden = false;
    watchedBook = created.id;
    await watchBook(created.id);
  } catch (err) {
    showError($("book").hidden ? $("book-form-error") : $("book-error"), err);
  }
}

function bookButton(label, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.textContent = label;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      showError($("book-error"), null);
      await action();
    } catch (err) {
      showError($("book-error"), err);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function chapterItem(bookId, chapter) {
  const item = document.createElement("li");
  const text = document.createElement("span");
  text.textContent = `${chapter.title}: ${chapter.segments_done} of ${chapter.segments_total}, ${chapter.state}`;
  const progress = document.createElement("progress");
  progress.max = Math.max(chapter.segments_total, 1);
  progress.value = chapter.segments_done;
  progress.setAttribute("aria-label", `${chapter.title} progress`);
  item.append(text, progress);
  if (chapter.state === "succeeded") {
    item.append(bookButton(`Play ${chapter.title}`, () => playBookAudio(`books/${bookId}/audio?format=wav&chapter=${chapter.chapter}`)));
  }
  return item;
}

function showBook(book) {
  $("book-name").textContent = book.title;
  $("book-state").textContent = book.state;
  $("book-eta").textContent = book.eta_seconds == null || book.state !== "running" ? "" : `about ${Math.round(book.eta_seconds)} s to go`;
  $("book-progress").max = Math.max(book.segments_total, 1);
  $("book-progress").value = book.segments_done;
  $("book-chapters").replaceChildren(...book.chapters.map((chapter) => chapterItem(book.id, chapter)));
  if (book.error) $("book-error").textContent = book.error;
}

async function watchBook(bookId) {
  while (watchedBook === bookId) {
    const book = await apiJson(`books/${encodeURIComponent(bookId)}`);
    if (watchedBook !== bookId) return;
    showBook(book);
    if (FINAL_STATES.has(book.state)) {
      if (book.state === "succeeded") await finishedBook(bookId);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, BOOK_POLL_MS));
  }
}

async function finishedBook(bookId) {
  const blob = await (await api(`books/${encodeURIComponent(bookId)}/audio?format=m4b`)).blob();
  $("book-download").href = URL.createObjectURL(blob);
  $("book-download").hidden = false;
  await loadSentences(bookId);
}

async function playBookAudio(path) {
  const blob = await (await api(path)).blob();
  const player = $("book-audio");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
  await player.play().catch(() => {}); // a browser that wants a gesture first still shows the player
}

async function loadSentences(bookId) {
  const { segments } = await apiJson(`books/${encodeURIComponent(bookId)}/segments?limit=1000`);
  const items = segments.filter((s) => !s.is_pause).map((segment) => sentenceItem(bookId, segment));
  $("book-sentences").replaceChildren(...items);
  $("book-sentences-title").hidden = false;
}

function sentenceItem(bookId, segment) {
  const item = document.createElement("li");
  item.dataset.index = String(segment.index);
  const text = document.createElement("span");
  text.textContent = segment.text;
  const play = bookButton("Play", () => playBookAudio(`books/${bookId}/segments/${segment.index}/audio`));
  play.setAttribute("aria-label", `Play sentence ${segment.index}`);
  const redo = bookButton("Redo", () => redoSentence(bookId, segment.index));
  redo.setAttribute("aria-label", `Redo sentence ${segment.index}`);
  item.append(text, play, redo);
  return item;
}

async function redoSentence(bookId, index) {
  const created = await apiJson(`books/${encodeURIComponent(bookId)}/segments/${index}/redo`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
  for (;;) {
    const job = await apiJson(`jobs/${encodeURIComponent(created.job_id)}`);
    if (FINAL_STATES.has(job.state)) {
      if (job.state !== "succeeded") throw new Error(`the sentence was not said again: ${job.error || job.state}`);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
  }
  await loadSentences(bookId);
  await playBookAudio(`books/${bookId}/segments/${index}/audio`);
  $("book-sentences").querySelector(`li[data-index="${index}"]`)?.setAttribute("data-redone", "true");
}

// ---------------------------------------------------------------------------------------------------------------

async function start() {
  $("speak-form").addEventListener("submit", speak);
  $("stop").addEventListener("click", () => {
    stopPlayback();
    setPlayerState("stopped");
    $("stop").disabled = true;
  });
  $("queue-job").addEventListener("click", queueJob);
  $("preview").addEventListener("click", previewSpeech);
  $("job-cancel").addEventListener("click", cancelJob);
  $("clone-form").addEventListener("submit", cloneVoice);
  $("tab-speech").addEventListener("click", () => showTab("speech"));
  $("tab-books").addEventListener("click", () => showTab("books"));
  $("book-form").addEventListener("submit", sendBook);
  const results = await Promise.allSettled([loadLanguages(), loadSpeakers(), loadVoices()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) showError($("speak-error"), failed.reason);
  document.body.dataset.ready = "true";
}

// For the browser test: the byte-to-sample assembly, checked with reads split at odd places.
window.xttsPage = { PcmAssembler };

start();
