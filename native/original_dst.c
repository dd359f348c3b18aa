/*
 * getsockopt(SOL_IP, SO_ORIGINAL_DST) for Node: the address a connection redirected by iptables (nat REDIRECT)
 * was sent to before the redirect. Node has no API for it; `loom up --transparent` sidecars read it to route a
 * captured connection by its original destination (Envoy's original_dst listener filter).
 *
 * originalDst(fd) -> [address, port]; throws with the errno's text (ENOENT: the connection was not redirected).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif

static napi_value original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "originalDst(fd): a file descriptor is required");
    return NULL;
  }
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "originalDst(fd): fd must be a non-negative integer");
    return NULL;
  }
  struct sockaddr_in addr;
  socklen_t len = sizeof(addr);
  memset(&addr, 0, sizeof(addr));
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &addr, &len) != 0) {
    char msg[128];
    snprintf(msg, sizeof(msg), "getsockopt(SO_ORIGINAL_DST): %s", strerror(errno));
    napi_throw_error(env, NULL, msg);
    return NULL;
  }
  char text[INET_ADDRSTRLEN];
  if (inet_ntop(AF_INET, &addr.sin_addr, text, sizeof(text)) == NULL) {
    napi_throw_error(env, NULL, "inet_ntop failed");
    return NULL;
  }
  napi_value result, host, port;
  napi_create_array_with_length(env, 2, &result);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &host);
  napi_create_uint32(env, ntohs(addr.sin_port), &port);
  napi_set_element(env, result, 0, host);
  napi_set_element(env, result, 1, port);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "originalDst", NAPI_AUTO_LENGTH, original_dst, NULL, &fn);
  napi_set_named_property(env, exports, "originalDst", fn);
  return exports;
}
