/*
 * conn_read.c - the connection's read path, whatever its transport: from
 * the bytes a transport reads (or decrypts) to onData, to the frames cut
 * from `input`, to the input kept for a later onData or for receive();
 * reading started and stopped; the peer's FIN and onEnd (conn.h has the
 * input side's diagram).
 *
 * The high-water-mark rule, in one place: `input` may hold up to
 * conn_input_limit() bytes; there the transport stops reading
 * (input_full), and it reads again once the input drops below. A receive()
 * that needs more than that (a byte count beyond it, "a") lifts the hold.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

/* ---- reading started and stopped ---- */

static int conn_wants_reading(const evtcp_conn *c) {
  return c->state == CONN_OPEN && c->input_end == INPUT_OPEN && !c->paused && !c->input_full &&
         c->output != OUTPUT_CLOSING;
}

void conn_start_reading(evtcp_conn *c) {
  if (c->reading || !conn_wants_reading(c)) return;
  c->reading = 1;
  c->transport->reading(c, 1);
}

void conn_stop_reading(evtcp_conn *c) {
  if (!c->reading) return;
  c->reading = 0;
  c->transport->reading(c, 0);
}

/* Re-arms reading so a changed read timeout takes effect. */
void conn_update_read_timeout(evtcp_conn *c) {
  conn_stop_reading(c);
  conn_start_reading(c);
}

/* ---- the high-water mark ---- */

/* How much input may be kept before reading pauses: highWaterMark, or a
 * whole frame of a byte count framing when that is larger. */
static size_t conn_input_limit(const evtcp_conn *c) {
  if (c->framing && c->framing->size > c->high_water) return c->framing->size;
  return c->high_water;
}

/* Input was added for receive(): hold reading at the limit, wake the reader. */
static void conn_input_grew(evtcp_conn *c) {
  if (evbuffer_get_length(c->input) >= conn_input_limit(c)) {
    c->input_full = 1;
    conn_stop_reading(c);
  }
  object_wake(&c->obj, WAKE_INPUT);
}

/* Input was consumed: offsets into it (line_scanned) start again, and
 * reading goes on below the limit. */
void conn_input_drained(evtcp_conn *c) {
  c->line_scanned = 0;
  if (c->input_full && evbuffer_get_length(c->input) < conn_input_limit(c)) {
    c->input_full = 0;
    conn_start_reading(c);
  }
}

/* A reader waits for more than the limit: the input may grow past it. */
void conn_input_allow_more(evtcp_conn *c) {
  if (!c->input_full) return;
  c->input_full = 0;
  conn_start_reading(c);
}

/* Pushes and consumes n bytes of input (n <= its length). */
void conn_input_take(lua_State *L, evtcp_conn *c, size_t n) {
  /* pullup copies only if the bytes span chains; then one copy to Lua */
  const unsigned char *p = n > 0 ? evbuffer_pullup(c->input, (ev_ssize_t)n) : NULL;
  lua_pushlstring(L, (const char *)p, n);
  evbuffer_drain(c->input, n);
  conn_input_drained(c);
}

/* ---- onData ---- */

/* Delivers a data notice: LUA_OK, or the status of a callback that raised
 * (LUA_ERRRUN too when the connection is gone); *ran tells whether an
 * onData ran (without one, the caller keeps the bytes). */
static int conn_deliver_notice_data(evtcp_conn *c, evtcp_notice *n, int *ran) {
  int status;
  *ran = 0;
  if (!conn_push(c)) return LUA_ERRRUN;
  status = event_deliver(c->obj.loop, n, 1, 0);
  *ran = n->handled;
  return status;
}

/* A frame being handed to onData: the connection, and how much of its
 * input the frame takes (its bytes and its line end or delimiter). */
typedef struct frame_taken {
  evtcp_conn *c;
  size_t consumed;
} frame_taken;

/* The frame is in the event: it leaves the input before onData runs, so
 * a handler that hands the connection to the blocking style and reads
 * (conn.handler = {} then receive) goes on from the next byte, and a
 * raising one has consumed it all the same. */
static void conn_frame_copied(void *arg) {
  frame_taken *t = (frame_taken *)arg;
  evbuffer_drain(t->c->input, t->consumed);
  conn_input_drained(t->c);
}

/* Hands the first n bytes of input to onData, n + skip consumed; without
 * an onData they stay. 1 when onData ran and returned. */
static int conn_deliver_frame(evtcp_conn *c, size_t n, size_t skip) {
  frame_taken taken;
  evtcp_notice note;
  int ran;
  taken.c = c;
  taken.consumed = n + skip;
  conn_notice(c, &note, EVT_DATA);
  note.data = (const char *)evbuffer_pullup(c->input, (ev_ssize_t)n);
  note.len = n;
  note.copied = conn_frame_copied;
  note.copied_arg = &taken;
  return conn_deliver_notice_data(c, &note, &ran) == LUA_OK && ran;
}

static int conn_deliver_frames(evtcp_conn *c) {
  int delivered = 0;
  while (c->input && !c->receiving && !c->paused && !loop_has_error(c->obj.loop)) {
    size_t have = evbuffer_get_length(c->input), n, skip;
    int frame;
    if (have == 0) break;
    frame = conn_next_frame(c, &n, &skip);
    if (frame == FRAME_TOO_LONG && conn_is_live(c)) { conn_frame_too_long(c); return 1; }
    if (frame != FRAME_WHOLE) {
      if (c->state == CONN_OPEN && !conn_peer_ended(c)) break; /* wait for the rest */
      n = have; /* the end came first */
      skip = 0;
    }
    /* the replies to the second and later frames of one arrival (a
     * pipelining client) are written together when they are delivered */
    if (delivered++ == 1 && c->framing) conn_cork(c);
    if (!conn_deliver_frame(c, n, skip)) return 0;
  }
  return c->input == NULL || evbuffer_get_length(c->input) == 0;
}

/* Input kept while the handler had no onData (and nobody reads it with
 * receive), or cut into frames (conn_frame.c), goes to onData: at the next
 * arrival, when conn.handler or conn.framing is assigned, on resume(), and
 * before the final callbacks. Once no more input can come, the rest of an
 * unfinished frame comes as a last onData: nothing is lost. Returns 1 if
 * nothing is left kept. */
int conn_deliver_kept(evtcp_conn *c) {
  int all = conn_deliver_frames(c);
  conn_uncork(c);
  return all;
}

/* Schedules the delivery of kept input to onData (DUE_INPUT). */
void conn_kept_input_due(evtcp_conn *c) {
  if (c->state != CONN_OPEN || c->receiving || c->input == NULL ||
      evbuffer_get_length(c->input) == 0 || c->obj.loop == NULL)
    return;
  conn_due(c, DUE_INPUT);
}

/* ---- bytes from the transport ---- */

/* Appends n bytes to `input`, made on first need. 0, or -1 when memory
 * ran out (the connection has failed). */
static int conn_keep(evtcp_conn *c, const char *buf, size_t n) {
  if ((c->input == NULL && (c->input = evbuffer_new()) == NULL) || evbuffer_add(c->input, buf, n) != 0) {
    conn_fail(c, ENOMEM, "evtcp");
    return -1;
  }
  return 0;
}

/* Bytes read from the socket (or decrypted): to onData, or kept in `input`
 * for receive(). Input is appended by copy, sized to what came: reserving
 * a 64 KiB read area in the buffer instead kept 128 KiB per idle
 * connection (libevent rounds the reservation up). */
void conn_deliver_data(evtcp_conn *c, const char *buf, size_t n) {
  evtcp_notice note;
  int ran;
  c->bytes_read += n;
  if (!c->receiving && ((c->input && evbuffer_get_length(c->input) > 0) || c->framing)) {
    /* bytes kept while there was no onData go first; frames are cut
     * from the buffer */
    if (conn_keep(c, buf, n) == 0 && !conn_deliver_kept(c)) conn_input_grew(c);
    return;
  }
  if (!c->receiving) {
    conn_notice(c, &note, EVT_DATA);
    note.data = buf;
    note.len = n;
    if (conn_deliver_notice_data(c, &note, &ran) != LUA_OK || ran) return;
  }
  /* no onData: keep the bytes for receive(), up to the limit */
  if (conn_keep(c, buf, n) == 0) conn_input_grew(c);
}

/* Input a transport has in a buffer (TLS: decrypted), handed on as
 * conn_deliver_data does while the program reads. */
void conn_deliver_buffer(evtcp_conn *c, struct evbuffer *in) {
  size_t len;
  while (c->reading && !loop_has_error(c->obj.loop) && (len = evbuffer_get_length(in)) > 0) {
    if (c->receiving) {
      if (evbuffer_add_buffer(c->input, in) != 0) { conn_fail(c, ENOMEM, "evtcp"); return; }
      conn_input_grew(c);
    } else {
      /* one chain (a TLS record or so) at a time, straight from the
       * buffer into the Lua string: pulling several chains up allocated a
       * new one and copied once more (bench/: TLS bulk) */
      struct evbuffer_iovec v;
      size_t n;
      if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0) break;
      n = v.iov_len < READ_CHUNK ? v.iov_len : READ_CHUNK;
      conn_deliver_data(c, (const char *)v.iov_base, n);
      evbuffer_drain(in, n);
    }
  }
}

/* DUE_BACKLOG: what a transport that reads into the bufferevent held while
 * reading was paused (no new read will report it). */
void conn_deliver_backlog(evtcp_conn *c) {
  if (c->reading && c->bev && c->transport->bev_reads) conn_deliver_buffer(c, bufferevent_get_input(c->bev));
}

/* ---- the peer's end ---- */

/* The peer's FIN: what came before it has been delivered; then onEnd, then
 * (without allowHalfOpen) our side closes once what is queued is flushed. */
void conn_on_peer_eof(evtcp_conn *c) {
  c->input_end = INPUT_EOF;
  conn_stop_reading(c);
  object_wake(&c->obj, WAKE_INPUT); /* a receive("a") is complete */
  conn_finish_input(c);
}

/* After the peer's FIN: what was kept before it goes to onData, then
 * onEnd. A pause() in between holds the rest back until resume(): onData
 * never follows onEnd. Replies sent meanwhile are flushed before the close. */
void conn_finish_input(evtcp_conn *c) {
  if (!conn_end_due(c)) return;
  if (!c->receiving) {
    c->input_end = INPUT_EOF_DATA;
    conn_deliver_kept(c);
    c->input_end = INPUT_EOF;
    if (c->paused) return; /* resume() goes on */
    if (loop_has_error(c->obj.loop)) { object_defer(&c->obj); return; } /* the next run does */
  }
  if (c->state == CONN_OPEN) {
    c->input_end = INPUT_ON_END;
    conn_deliver(c, EVT_END);
  }
  c->input_end = INPUT_ENDED;
  if (c->state == CONN_OPEN && conn_buffered(c) == 0) conn_flushed(c, 1);
}
