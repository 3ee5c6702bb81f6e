/* fetch: download one file COUNT times over HTTP/1.1 and throw the body away.
 *
 * usage: fetch HOST PORT PATH COUNT
 *
 * One JSON line per transfer: {"seconds": S, "bytes": N}, timed from connect()
 * to the last byte; then {"client_cpu_seconds": C} for the client's own CPU,
 * so a report can tell whether the client was the bottleneck.
 * Exits non-zero on any short read, non-200 status or socket error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFFER_SIZE (1 << 20)

static char buffer[BUFFER_SIZE];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int connect_to(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "fetch: %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
        fprintf(stderr, "fetch: connect %s:%s: %s\n", host, port, strerror(errno));
        freeaddrinfo(found);
        if (fd >= 0) close(fd);
        return -1;
    }
    freeaddrinfo(found);
    return fd;
}

/* One GET; returns body bytes received, or -1 on error. */
static long long transfer(const char *host, const char *port, const char *path) {
    int fd = connect_to(host, port);
    if (fd < 0) return -1;
    char request[1024];
    int length = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    if (write(fd, request, length) != length) {
        fprintf(stderr, "fetch: write: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    /* Read until the end of the headers; the rest of that read is body. */
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t n = read(fd, buffer + have, BUFFER_SIZE - 1 - have);
        if (n <= 0) {
            fprintf(stderr, "fetch: connection closed before the headers ended\n");
            close(fd);
            return -1;
        }
        have += n;
        buffer[have] = '\0';
        end = strstr(buffer, "\r\n\r\n");
        if (!end && have >= BUFFER_SIZE - 1) {
            fprintf(stderr, "fetch: headers too long\n");
            close(fd);
            return -1;
        }
    }
    int status = 0;
    if (sscanf(buffer, "HTTP/1.%*d %d", &status) != 1 || status != 200) {
        fprintf(stderr, "fetch: status %d for %s\n", status, path);
        close(fd);
        return -1;
    }
    char *cl = strcasestr(buffer, "\r\ncontent-length:");
    if (!cl || cl > end) {
        fprintf(stderr, "fetch: no Content-Length\n");
        close(fd);
        return -1;
    }
    long long expected = atoll(cl + strlen("\r\ncontent-length:"));
    long long received = (long long)(buffer + have - (end + 4));
    while (received < expected) {
        ssize_t n = read(fd, buffer, BUFFER_SIZE);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        received += n;
    }
    close(fd);
    if (received != expected) {
        fprintf(stderr, "fetch: got %lld of %lld bytes\n", received, expected);
        return -1;
    }
    return received;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: fetch HOST PORT PATH COUNT\n");
        return 2;
    }
    int count = atoi(argv[4]);
    if (count <= 0) {
        fprintf(stderr, "fetch: COUNT must be positive\n");
        return 2;
    }
    for (int i = 0; i < count; i++) {
        double start = now();
        long long bytes = transfer(argv[1], argv[2], argv[3]);
        double seconds = now() - start;
        if (bytes < 0) return 1;
        printf("{\"seconds\": %.9f, \"bytes\": %lld}\n", seconds, bytes);
        fflush(stdout);
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("{\"client_cpu_seconds\": %.6f}\n",
           usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6);
    return 0;
}
