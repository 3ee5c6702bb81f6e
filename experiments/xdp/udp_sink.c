/* udp_sink: receive UDP datagrams with recvmmsg() and throw them away, counting.
 *
 * usage: udp_sink ADDRESS PORT COUNT_FILE [--batch N] [--rcvbuf BYTES]
 *
 * Binds ADDRESS:PORT and receives in batches of N (default 64) until SIGTERM or
 * SIGINT. The counts live in COUNT_FILE, mapped shared and updated after every
 * batch, so a reader sees them at any moment without signalling the sink: one
 * text line padded to a fixed width, "packets bytes batches\n". --rcvbuf sets
 * SO_RCVBUF (default: the kernel's). On exit it prints a summary to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define SLOT 2048 /* larger than any datagram on a 1500-byte link; longer ones are truncated */
#define LINE 64   /* the count file's fixed size */

static volatile sig_atomic_t stopping;

static void stop(int signal_number) {
    (void)signal_number;
    stopping = 1;
}

static int usage(const char *problem) {
    if (problem)
        fprintf(stderr, "udp_sink: %s\n", problem);
    fprintf(stderr, "usage: udp_sink ADDRESS PORT COUNT_FILE [--batch N] [--rcvbuf BYTES]\n");
    return 2;
}

static long whole(const char *flag, const char *text, long low, long high) {
    char *rest;
    errno = 0;
    long value = strtol(text, &rest, 10);
    if (errno || rest == text || *rest || value < low || value > high) {
        fprintf(stderr, "udp_sink: %s %s: give a whole number from %ld to %ld\n", flag, text, low, high);
        return -1;
    }
    return value;
}

static int bind_to(const char *address, const char *port, long rcvbuf) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM, .ai_flags = AI_PASSIVE}, *found;
    int rc = getaddrinfo(address, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "udp_sink: %s:%s: %s\n", address, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd >= 0 && rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &(int){(int)rcvbuf}, sizeof(int)) != 0) {
        fprintf(stderr, "udp_sink: SO_RCVBUF %ld: %s\n", rcvbuf, strerror(errno));
        close(fd);
        fd = -1;
    } else if (fd < 0 || bind(fd, found->ai_addr, found->ai_addrlen) != 0) {
        fprintf(stderr, "udp_sink: bind %s:%s: %s\n", address, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    return fd;
}

static char *map_count_file(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, LINE) != 0) {
        fprintf(stderr, "udp_sink: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *line = mmap(NULL, LINE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (line == MAP_FAILED) {
        fprintf(stderr, "udp_sink: mmap %s: %s\n", path, strerror(errno));
        return NULL;
    }
    return line;
}

/* Rewrite the whole line; a reader may see a torn line and must read again. */
static void publish(char *line, uint64_t packets, uint64_t bytes, uint64_t batches) {
    char text[LINE];
    int length = snprintf(text, sizeof text, "%llu %llu %llu", (unsigned long long)packets,
                          (unsigned long long)bytes, (unsigned long long)batches);
    memset(text + length, ' ', LINE - 1 - length);
    text[LINE - 1] = '\n';
    memcpy(line, text, LINE);
}

static char slots[MAX_BATCH][SLOT];

int main(int argc, char **argv) {
    if (argc < 4)
        return usage(NULL);
    long batch = 64, rcvbuf = 0;
    for (int i = 4; i < argc; i += 2) {
        if (i + 1 >= argc)
            return usage("a flag needs a value");
        if (!strcmp(argv[i], "--batch")) {
            if ((batch = whole(argv[i], argv[i + 1], 1, MAX_BATCH)) < 0)
                return 2;
        } else if (!strcmp(argv[i], "--rcvbuf")) {
            if ((rcvbuf = whole(argv[i], argv[i + 1], 1024, 1L << 30)) < 0)
                return 2;
        } else {
            fprintf(stderr, "udp_sink: unknown flag %s\n", argv[i]);
            return usage(NULL);
        }
    }
    char *line = map_count_file(argv[3]);
    if (!line)
        return 1;
    publish(line, 0, 0, 0);
    int fd = bind_to(argv[1], argv[2], rcvbuf);
    if (fd < 0)
        return 1;
    /* No SA_RESTART: SIGTERM interrupts a recvmmsg() that waits for data. */
    struct sigaction action = {.sa_handler = stop};
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    struct mmsghdr messages[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    memset(messages, 0, sizeof messages);
    for (int i = 0; i < batch; i++) {
        vectors[i] = (struct iovec){.iov_base = slots[i], .iov_len = SLOT};
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t packets = 0, bytes = 0, batches = 0;
    while (!stopping) {
        /* MSG_WAITFORONE: block for the first datagram, then take what is queued. */
        int got = recvmmsg(fd, messages, (unsigned)batch, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "udp_sink: recvmmsg: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < got; i++)
            bytes += messages[i].msg_len;
        packets += got;
        batches++;
        publish(line, packets, bytes, batches);
    }
    fprintf(stderr, "udp_sink: %llu packets, %llu bytes in %llu batches\n", (unsigned long long)packets,
            (unsigned long long)bytes, (unsigned long long)batches);
    return 0;
}
