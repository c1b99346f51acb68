/*
 * The hello filter, in C, against proxy_wasm.h:
 *
 *   - proxy_on_configure reads {"greeting": "..."} (default "hello") and logs it;
 *   - every response gets x-hello: <greeting>;
 *   - a request for /forbidden (with or without a query) is answered here with
 *     403 and Weir's JSON error body, carrying the request's x-request-id.
 *
 * Built as a WASI reactor: the host calls _initialize once (it runs the C
 * constructors), then the exported callbacks.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_wasm.h"

/* The ABI version this module speaks: the host looks for this export. */
void PROXY_EXPORT(proxy_abi_version_0_2_1)(void) {}

/* The host calls this for every block of bytes it hands to the filter. */
void *PROXY_EXPORT(proxy_on_memory_allocate)(size_t size) { return malloc(size); }

/* The greeting when the configuration names none. */
static const char DEFAULT_GREETING[] = "hello";

/*
 * The configured greeting (not NUL-terminated: a header value may hold any
 * byte but a control character). Weir gives each filter VMs of its own with
 * one root context each, so one global is enough.
 */
static char *greeting;
static size_t greeting_size;

/* ---- a growable byte string ---- */

typedef struct {
  char *data;
  size_t size, capacity;
  bool failed; /* out of memory: the contents are incomplete */
} bytes_t;

static void put(bytes_t *b, const void *data, size_t size) {
  if (b->failed) return;
  if (b->size + size > b->capacity) {
    size_t capacity = (b->size + size) * 2;
    char *grown = realloc(b->data, capacity);
    if (grown == NULL) {
      b->failed = true;
      return;
    }
    b->data = grown;
    b->capacity = capacity;
  }
  memcpy(b->data + b->size, data, size);
  b->size += size;
}

static void put_str(bytes_t *b, const char *text) { put(b, text, strlen(text)); }

static void put_u32(bytes_t *b, uint32_t v) {
  unsigned char le[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24};
  put(b, le, 4);
}

/* ---- just enough JSON ---- */

/* Nesting deeper than this (in members the filter skips) is refused. */
#define MAX_DEPTH 64

typedef struct {
  const char *at, *end;
} parser_t;

static int peek(const parser_t *p) { return p->at < p->end ? (unsigned char)*p->at : -1; }

static bool eat(parser_t *p, int c) {
  if (peek(p) != c) return false;
  p->at++;
  return true;
}

static void space(parser_t *p) {
  while (peek(p) == ' ' || peek(p) == '\t' || peek(p) == '\n' || peek(p) == '\r') p->at++;
}

/* Four hex digits as a number, or -1. */
static long hex4(parser_t *p) {
  long value = 0;
  for (int i = 0; i < 4; i++) {
    int c = peek(p), digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else return -1;
    p->at++;
    value = value << 4 | digit;
  }
  return value;
}

static void put_utf8(bytes_t *out, long code) {
  unsigned char u[4];
  size_t n;
  if (code < 0x80) {
    u[0] = code, n = 1;
  } else if (code < 0x800) {
    u[0] = 0xc0 | code >> 6, u[1] = 0x80 | (code & 0x3f), n = 2;
  } else if (code < 0x10000) {
    u[0] = 0xe0 | code >> 12, u[1] = 0x80 | (code >> 6 & 0x3f), u[2] = 0x80 | (code & 0x3f), n = 3;
  } else {
    u[0] = 0xf0 | code >> 18, u[1] = 0x80 | (code >> 12 & 0x3f);
    u[2] = 0x80 | (code >> 6 & 0x3f), u[3] = 0x80 | (code & 0x3f), n = 4;
  }
  put(out, u, n);
}

/* A string literal, decoded into out (when not NULL); false if there is none here. */
static bool string(parser_t *p, bytes_t *out) {
  bytes_t ignored = {0};
  if (out == NULL) out = &ignored;
  bool ok = false;
  if (!eat(p, '"')) goto done;
  for (;;) {
    int c = peek(p);
    if (c < 0x20) goto done; /* the end of the text, or a raw control character */
    p->at++;
    if (c == '"') break;
    if (c != '\\') {
      char byte = (char)c;
      put(out, &byte, 1);
      continue;
    }
    int e = peek(p);
    p->at++;
    char byte;
    switch (e) {
    case '"': case '\\': case '/': byte = (char)e; break;
    case 'b': byte = '\b'; break;
    case 'f': byte = '\f'; break;
    case 'n': byte = '\n'; break;
    case 'r': byte = '\r'; break;
    case 't': byte = '\t'; break;
    case 'u': {
      long code = hex4(p);
      if (code < 0 || (code >= 0xdc00 && code <= 0xdfff)) goto done; /* a lone low surrogate */
      if (code >= 0xd800 && code <= 0xdbff) {
        /* A high surrogate must be followed by \u and a low one. */
        if (!eat(p, '\\') || !eat(p, 'u')) goto done;
        long low = hex4(p);
        if (low < 0xdc00 || low > 0xdfff) goto done;
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
      }
      put_utf8(out, code);
      continue;
    }
    default: goto done;
    }
    put(out, &byte, 1);
  }
  ok = !out->failed;
done:
  free(ignored.data);
  return ok;
}

static size_t digits(parser_t *p) {
  size_t n = 0;
  while (peek(p) >= '0' && peek(p) <= '9') p->at++, n++;
  return n;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool number(parser_t *p) {
  eat(p, '-');
  if (!eat(p, '0') && digits(p) == 0) return false;
  if (eat(p, '.') && digits(p) == 0) return false;
  if (eat(p, 'e') || eat(p, 'E')) {
    if (!eat(p, '+')) eat(p, '-');
    if (digits(p) == 0) return false;
  }
  return true;
}

static bool word(parser_t *p, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(p->end - p->at) < n || memcmp(p->at, w, n) != 0) return false;
  p->at += n;
  return true;
}

/* Skips any JSON value; false if there is none here. */
static bool skip_value(parser_t *p, int depth) {
  if (depth > MAX_DEPTH) return false;
  int c = peek(p);
  if (c == '"') return string(p, NULL);
  if (c == '{' || c == '[') {
    int close = c == '{' ? '}' : ']';
    p->at++;
    space(p);
    if (eat(p, close)) return true;
    for (;;) {
      if (c == '{') {
        if (!string(p, NULL)) return false;
        space(p);
        if (!eat(p, ':')) return false;
        space(p);
      }
      if (!skip_value(p, depth + 1)) return false;
      space(p);
      if (eat(p, close)) return true;
      if (!eat(p, ',')) return false;
      space(p);
    }
  }
  return word(p, "true") || word(p, "false") || word(p, "null") || number(p);
}

/*
 * Reads a configuration such as {"greeting": "hello"}: a JSON object whose
 * "greeting" member, if present, is a string (decoded into *found, and
 * *has_greeting set). Other members may hold any JSON value and are
 * skipped. False when the text is anything else.
 */
static bool read_greeting(const char *text, size_t size, bytes_t *found, bool *has_greeting) {
  parser_t p = {text, text + size};
  bytes_t key = {0};
  bool ok = false;
  space(&p);
  if (!eat(&p, '{')) goto done;
  space(&p);
  if (!eat(&p, '}')) {
    for (;;) {
      key.size = 0;
      if (!string(&p, &key)) goto done;
      space(&p);
      if (!eat(&p, ':')) goto done;
      space(&p);
      if (key.size == 8 && memcmp(key.data, "greeting", 8) == 0) {
        found->size = 0;
        if (!string(&p, found)) goto done;
        *has_greeting = true;
      } else if (!skip_value(&p, 0)) {
        goto done;
      }
      space(&p);
      if (eat(&p, '}')) break;
      if (!eat(&p, ',')) goto done;
      space(&p);
    }
  }
  space(&p);
  ok = p.at == p.end;
done:
  free(key.data);
  return ok;
}

/* text as a JSON string literal: quotes, backslashes and control characters escaped. */
static void put_quoted(bytes_t *out, const char *text, size_t size) {
  static const char hex[] = "0123456789abcdef";
  put_str(out, "\"");
  for (size_t i = 0; i < size; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c == '"' || c == '\\') {
      char escaped[2] = {'\\', (char)c};
      put(out, escaped, 2);
    } else if (c == '\n') {
      put_str(out, "\\n");
    } else if (c == '\r') {
      put_str(out, "\\r");
    } else if (c == '\t') {
      put_str(out, "\\t");
    } else if (c < 0x20) {
      char escaped[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
      put(out, escaped, 6);
    } else {
      put(out, &text[i], 1);
    }
  }
  put_str(out, "\"");
}

/* ---- the callbacks ---- */

static void log_text(proxy_log_level_t level, const char *text) {
  proxy_log(level, text, strlen(text));
}

void PROXY_EXPORT(proxy_on_context_create)(uint32_t context_id, uint32_t parent_id) {}

uint32_t PROXY_EXPORT(proxy_on_vm_start)(uint32_t root_id, uint32_t vm_configuration_size) {
  return 1;
}

/*
 * Reads the plugin configuration. Refuses (returns 0) anything that is not a
 * JSON object, a greeting that is not a string, and a greeting holding a
 * control character (a header value cannot hold one).
 */
uint32_t PROXY_EXPORT(proxy_on_configure)(uint32_t root_id, uint32_t configuration_size) {
  char *raw = NULL;
  size_t raw_size = 0;
  bytes_t configured = {0};
  bool has_greeting = false, ok = true;
  if (configuration_size > 0 &&
      proxy_get_buffer_bytes(PROXY_BUFFER_PLUGIN_CONFIGURATION, 0, configuration_size, &raw,
                             &raw_size) == PROXY_OK &&
      raw_size > 0) {
    ok = read_greeting(raw, raw_size, &configured, &has_greeting);
    free(raw);
    if (!ok) log_text(PROXY_LOG_ERROR, "configuration refused: not a JSON object with a string greeting");
  }
  if (ok && !has_greeting) put_str(&configured, DEFAULT_GREETING);
  for (size_t i = 0; ok && i < configured.size; i++) {
    unsigned char c = (unsigned char)configured.data[i];
    if (c < 0x20 || c == 0x7f) {
      log_text(PROXY_LOG_ERROR, "configuration refused: the greeting holds a control character");
      ok = false;
    }
  }
  if (!ok || configured.failed) {
    free(configured.data);
    return 0;
  }
  free(greeting);
  greeting = configured.data;
  greeting_size = configured.size;

  bytes_t message = {0};
  put_str(&message, "configured greeting: ");
  put(&message, greeting, greeting_size);
  if (!message.failed) proxy_log(PROXY_LOG_INFO, message.data, message.size);
  free(message.data);
  return 1;
}

/* Whether path (with its query) is /forbidden. */
static bool is_forbidden(const char *path, size_t size) {
  static const char target[] = "/forbidden";
  size_t n = sizeof target - 1;
  return size >= n && memcmp(path, target, n) == 0 && (size == n || path[n] == '?');
}

uint32_t PROXY_EXPORT(proxy_on_request_headers)(uint32_t context_id, uint32_t headers,
                                                uint32_t end_of_stream) {
  char *path = NULL, *id = NULL;
  size_t path_size = 0, id_size = 0;
  if (proxy_get_header_map_value(PROXY_MAP_REQUEST_HEADERS, ":path", 5, &path, &path_size) !=
      PROXY_OK) {
    return PROXY_ACTION_CONTINUE;
  }
  bool forbidden = is_forbidden(path, path_size);
  free(path);
  if (!forbidden) return PROXY_ACTION_CONTINUE;

  /* Weir sets x-request-id before any filter runs. */
  if (proxy_get_header_map_value(PROXY_MAP_REQUEST_HEADERS, "x-request-id", 12, &id, &id_size) !=
      PROXY_OK) {
    id = NULL, id_size = 0;
  }
  bytes_t body = {0};
  put_str(&body, "{\"error\":{\"status\":403,\"code\":\"forbidden\","
                 "\"message\":\"this path is forbidden\",\"request_id\":");
  put_quoted(&body, id, id_size);
  put_str(&body, "}}");
  free(id);

  /* The reply's headers, as a serialized map (see proxy_wasm.h). */
  static const char *const reply_headers[][2] = {{"content-type", "application/json"}};
  size_t count = sizeof reply_headers / sizeof reply_headers[0];
  bytes_t pairs = {0};
  put_u32(&pairs, count);
  for (size_t i = 0; i < count; i++) {
    put_u32(&pairs, strlen(reply_headers[i][0]));
    put_u32(&pairs, strlen(reply_headers[i][1]));
  }
  for (size_t i = 0; i < count; i++) {
    put(&pairs, reply_headers[i][0], strlen(reply_headers[i][0]) + 1); /* with its NUL */
    put(&pairs, reply_headers[i][1], strlen(reply_headers[i][1]) + 1);
  }
  if (!body.failed && !pairs.failed) {
    proxy_send_local_response(403, "forbidden", 9, body.data, body.size, pairs.data, pairs.size,
                              PROXY_NO_GRPC_STATUS);
  }
  free(body.data);
  free(pairs.data);
  return PROXY_ACTION_PAUSE;
}

uint32_t PROXY_EXPORT(proxy_on_response_headers)(uint32_t context_id, uint32_t headers,
                                                 uint32_t end_of_stream) {
  if (greeting == NULL) {
    proxy_replace_header_map_value(PROXY_MAP_RESPONSE_HEADERS, "x-hello", 7, DEFAULT_GREETING,
                                   sizeof DEFAULT_GREETING - 1);
  } else {
    proxy_replace_header_map_value(PROXY_MAP_RESPONSE_HEADERS, "x-hello", 7, greeting,
                                   greeting_size);
  }
  return PROXY_ACTION_CONTINUE;
}
