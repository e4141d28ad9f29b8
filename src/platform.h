/*
 * platform.h - what differs between the systems evtcp builds on. Included
 * first by every source file: the feature macros must come before any
 * system header. Linux is tested; macOS and the BSDs are built for.
 */
#ifndef EVTCP_PLATFORM_H
#define EVTCP_PLATFORM_H

/* POSIX 2008 and BSD names (strndup, clock_gettime, sigaction, struct
 * addrinfo, struct tcp_info) also under -std=c99 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#define _DARWIN_C_SOURCE
#endif

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

/* The idle time before keepalive probes: TCP_KEEPALIVE on macOS. */
#if defined(TCP_KEEPIDLE)
#define EVTCP_TCP_KEEPIDLE TCP_KEEPIDLE
#elif defined(TCP_KEEPALIVE)
#define EVTCP_TCP_KEEPIDLE TCP_KEEPALIVE
#endif

/* A write to a vanished peer must not raise SIGPIPE: per call where
 * MSG_NOSIGNAL exists, per socket (SO_NOSIGPIPE) where it does not. The
 * process-wide SIG_IGN set at require covers libevent's own writes. */
#ifdef MSG_NOSIGNAL
#define EVTCP_MSG_NOSIGNAL MSG_NOSIGNAL
#else
#define EVTCP_MSG_NOSIGNAL 0
#endif

#endif
