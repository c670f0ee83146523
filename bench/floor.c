/*
 * The floor for bench/fanout.ts: the least a server can do to send a live stream to
 * N sockets. It takes one producer on the ingest port and writes each chunk it reads,
 * once, to every reader connected to the viewer port: one read, N writes, no framing,
 * no queues, no parsing. What it costs is what the kernel needs to move these bytes.
 *
 *   cc -O2 -o floor bench/floor.c && ./floor INGEST_PORT VIEWER_PORT
 *
 * Both ports listen on 127.0.0.1. A reader whose socket cannot take a whole chunk at
 * once is dropped: the floor keeps no backlog (the bench's readers keep up).
 */
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

#define MAX_READERS 65536
#define CHUNK 65536

static int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4096) < 0) {
    perror("floor: listen");
    exit(1);
  }
  return fd;
}

static void watch(int epoll, int fd) {
  struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
  epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s INGEST_PORT VIEWER_PORT\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int ingest = listen_on(atoi(argv[1]));
  int viewers = listen_on(atoi(argv[2]));
  int epoll = epoll_create1(0);
  watch(epoll, ingest);
  watch(epoll, viewers);

  static int readers[MAX_READERS];
  static char chunk[CHUNK];
  int count = 0, producer = -1;
  struct epoll_event events[16];
  for (;;) {
    int ready = epoll_wait(epoll, events, 16, -1);
    for (int e = 0; e < ready; e++) {
      int fd = events[e].data.fd;
      if (fd == ingest) {
        int client = accept4(ingest, NULL, NULL, SOCK_NONBLOCK);
        if (client < 0) continue;
        if (producer >= 0) {
          close(client); /* one producer at a time */
          continue;
        }
        producer = client;
        watch(epoll, producer);
      } else if (fd == viewers) {
        int client, one = 1;
        while ((client = accept4(viewers, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (count == MAX_READERS) {
            close(client);
            continue;
          }
          setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          readers[count++] = client;
        }
      } else if (fd == producer) {
        ssize_t n = read(producer, chunk, CHUNK);
        if (n <= 0) {
          if (n < 0 && errno == EAGAIN) continue;
          close(producer);
          producer = -1;
          continue;
        }
        for (int i = 0; i < count;) {
          if (write(readers[i], chunk, n) == n) {
            i++;
          } else {
            close(readers[i]);
            readers[i] = readers[--count];
          }
        }
      }
    }
  }
}
