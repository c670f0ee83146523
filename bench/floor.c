/*
 * The floor for bench/fanout.ts: the least a server can do to send live streams to
 * N sockets. Each stream takes one producer on its ingest port and writes each chunk
 * it reads, once, to every reader connected to its viewer port: one read, N writes,
 * no framing, no queues, no parsing. What it costs is what the kernel needs to move
 * these bytes, and, with several streams, to wake the server for each one's reads.
 *
 *   cc -O2 -o floor bench/floor.c && ./floor INGEST_PORT VIEWER_PORT [INGEST_PORT VIEWER_PORT ...]
 *
 * Every port listens on 127.0.0.1; each pair of ports is one stream. A reader whose
 * socket cannot take a whole chunk at once is dropped: the floor keeps no backlog (the
 * bench's readers keep up).
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_STREAMS 64
#define MAX_READERS 65536
#define MAX_FDS (MAX_READERS + 4 * MAX_STREAMS + 16)
#define CHUNK 65536

struct stream {
  int ingest, viewers, producer;
  /* Its readers: a fixed share of MAX_READERS. */
  int *readers;
  int count, capacity;
};

/* What each file descriptor is: 1 an ingest port, 2 a viewer port, 3 a producer; and whose. */
static unsigned char kind[MAX_FDS];
static struct stream *owner[MAX_FDS];

static int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || fd >= MAX_FDS || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4096) < 0) {
    perror("floor: listen");
    exit(1);
  }
  return fd;
}

static void watch(int epoll, int fd, unsigned char what, struct stream *s) {
  struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
  kind[fd] = what;
  owner[fd] = s;
  epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

int main(int argc, char **argv) {
  int streams = (argc - 1) / 2;
  if (argc < 3 || (argc - 1) % 2 != 0 || streams > MAX_STREAMS) {
    fprintf(stderr, "usage: %s INGEST_PORT VIEWER_PORT [INGEST_PORT VIEWER_PORT ...] (at most %d streams)\n", argv[0], MAX_STREAMS);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int epoll = epoll_create1(0);
  static struct stream all[MAX_STREAMS];
  static int readers[MAX_READERS];
  for (int k = 0; k < streams; k++) {
    struct stream *s = &all[k];
    s->ingest = listen_on(atoi(argv[1 + 2 * k]));
    s->viewers = listen_on(atoi(argv[2 + 2 * k]));
    s->producer = -1;
    s->capacity = MAX_READERS / streams;
    s->readers = readers + k * s->capacity;
    watch(epoll, s->ingest, 1, s);
    watch(epoll, s->viewers, 2, s);
  }

  static char chunk[CHUNK];
  struct epoll_event events[16];
  for (;;) {
    /* epoll_pwait, as libuv calls it: the bench counts the same syscall for every server. */
    int ready = epoll_pwait(epoll, events, 16, -1, NULL);
    for (int e = 0; e < ready; e++) {
      int fd = events[e].data.fd;
      struct stream *s = owner[fd];
      if (kind[fd] == 1) {
        int client = accept4(fd, NULL, NULL, SOCK_NONBLOCK);
        if (client < 0) continue;
        if (s->producer >= 0 || client >= MAX_FDS) {
          close(client); /* one producer at a time */
          continue;
        }
        s->producer = client;
        watch(epoll, client, 3, s);
      } else if (kind[fd] == 2) {
        int client, one = 1;
        while ((client = accept4(fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (s->count == s->capacity) {
            close(client);
            continue;
          }
          setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          s->readers[s->count++] = client;
        }
      } else if (kind[fd] == 3) {
        ssize_t n = read(fd, chunk, CHUNK);
        if (n <= 0) {
          if (n < 0 && errno == EAGAIN) continue;
          close(fd);
          kind[fd] = 0;
          s->producer = -1;
          continue;
        }
        for (int i = 0; i < s->count;) {
          if (write(s->readers[i], chunk, n) == n) {
            i++;
          } else {
            close(s->readers[i]);
            s->readers[i] = s->readers[--s->count];
          }
        }
      }
    }
  }
}
