/*
 * proxy_wasm.h: the Proxy-Wasm ABI 0.2.1 for filters written in C.
 *
 * The host functions a filter calls (imported from module "env") and the
 * constants they take. Every host function returns a proxy_status_t; results
 * come back through out-pointers. Bytes the host returns (header values,
 * configuration) live in blocks the host allocates by calling the filter's
 * exported proxy_on_memory_allocate: the filter owns them and frees them.
 *
 * Only the calls most filters need are declared here; the full list is in
 * Weir's PLUGIN_GUIDE.md, section 5.
 */
#ifndef PROXY_WASM_H
#define PROXY_WASM_H

#include <stddef.h>
#include <stdint.h>

/* Marks a function as an export the host calls, under its own name. */
#define PROXY_EXPORT(name) __attribute__((export_name(#name))) name

/* Declares a host function of module "env". */
#define PROXY_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))

typedef enum {
  PROXY_OK = 0,
  PROXY_NOT_FOUND = 1,
  PROXY_BAD_ARGUMENT = 2,
  PROXY_SERIALIZATION_FAILURE = 3,
  PROXY_PARSE_FAILURE = 4,
  PROXY_INVALID_MEMORY_ACCESS = 6,
  PROXY_EMPTY = 7,
  PROXY_CAS_MISMATCH = 8,
  PROXY_INTERNAL_FAILURE = 10,
  PROXY_UNIMPLEMENTED = 12,
} proxy_status_t;

typedef enum {
  PROXY_LOG_TRACE = 0,
  PROXY_LOG_DEBUG = 1,
  PROXY_LOG_INFO = 2,
  PROXY_LOG_WARN = 3,
  PROXY_LOG_ERROR = 4,
  PROXY_LOG_CRITICAL = 5,
} proxy_log_level_t;

typedef enum {
  PROXY_MAP_REQUEST_HEADERS = 0,
  PROXY_MAP_REQUEST_TRAILERS = 1,
  PROXY_MAP_RESPONSE_HEADERS = 2,
  PROXY_MAP_RESPONSE_TRAILERS = 3,
} proxy_map_type_t;

typedef enum {
  PROXY_BUFFER_REQUEST_BODY = 0,
  PROXY_BUFFER_RESPONSE_BODY = 1,
  PROXY_BUFFER_VM_CONFIGURATION = 6,
  PROXY_BUFFER_PLUGIN_CONFIGURATION = 7,
} proxy_buffer_type_t;

/* What a header, body or trailer callback returns. */
typedef enum {
  PROXY_ACTION_CONTINUE = 0,
  PROXY_ACTION_PAUSE = 1,
} proxy_action_t;

/* The stream proxy_continue_stream resumes. */
typedef enum {
  PROXY_STREAM_REQUEST = 0,
  PROXY_STREAM_RESPONSE = 1,
} proxy_stream_type_t;

/* grpc_status for proxy_send_local_response when the answer is plain HTTP. */
#define PROXY_NO_GRPC_STATUS (-1)

PROXY_IMPORT(proxy_log)
proxy_status_t proxy_log(proxy_log_level_t level, const char *message, size_t message_size);

/* Copies [start, start + max_size) of a buffer into a block it allocates. */
PROXY_IMPORT(proxy_get_buffer_bytes)
proxy_status_t proxy_get_buffer_bytes(proxy_buffer_type_t type, uint32_t start, uint32_t max_size,
                                      char **ret_data, size_t *ret_size);

/* The first value of a header; PROXY_NOT_FOUND when absent. Keys are lower case. */
PROXY_IMPORT(proxy_get_header_map_value)
proxy_status_t proxy_get_header_map_value(proxy_map_type_t type, const char *key, size_t key_size,
                                          char **ret_value, size_t *ret_size);

PROXY_IMPORT(proxy_add_header_map_value)
proxy_status_t proxy_add_header_map_value(proxy_map_type_t type, const char *key, size_t key_size,
                                          const char *value, size_t value_size);

/* Makes value the header's only value. */
PROXY_IMPORT(proxy_replace_header_map_value)
proxy_status_t proxy_replace_header_map_value(proxy_map_type_t type, const char *key,
                                              size_t key_size, const char *value,
                                              size_t value_size);

PROXY_IMPORT(proxy_remove_header_map_value)
proxy_status_t proxy_remove_header_map_value(proxy_map_type_t type, const char *key,
                                             size_t key_size);

/*
 * Answers the request from the filter. headers is a serialized map: a
 * little-endian u32 count, each key and value length as u32, then each key
 * and value followed by a NUL byte (see proxy_serialize_pairs in hello.c).
 */
PROXY_IMPORT(proxy_send_local_response)
proxy_status_t proxy_send_local_response(uint32_t status_code, const char *details,
                                         size_t details_size, const char *body, size_t body_size,
                                         const char *headers, size_t headers_size,
                                         int32_t grpc_status);

PROXY_IMPORT(proxy_continue_stream)
proxy_status_t proxy_continue_stream(proxy_stream_type_t type);

/* A property such as request.path; path segments are joined by NUL bytes. */
PROXY_IMPORT(proxy_get_property)
proxy_status_t proxy_get_property(const char *path, size_t path_size, char **ret_value,
                                  size_t *ret_size);

#endif /* PROXY_WASM_H */
