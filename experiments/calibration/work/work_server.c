/* work_server: an HTTP/1.1 server whose only per-request cost is a calibrated CPU loop.
 *
 * usage: work_server --bind ADDR --port PORT --iterations N
 *
 * One connection at a time, like ../../sendfile/file_server.py: accept, read the request up
 * to its blank line, run N rounds of xorshift64, answer 200 with a small body that carries
 * the loop's result, close. Each round depends on the one before, so the loop can neither be
 * removed (its result is sent) nor run faster than its dependency chain; its time is N times
 * a constant of the CPU. A variant given N/2 therefore does exactly half the work, which
 * makes the true ratio of a pair known in advance (2.0, or 1.0 for equal N).
 * SIGTERM or SIGINT ends it with status 0, after answering the request in flight.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_LIMIT 65536

static volatile sig_atomic_t stopping = 0;

static void on_stop(int signum) {
    (void)signum;
    stopping = 1;
}

/* The work: N dependent xorshift64 rounds from a seed the compiler cannot know. */
static uint64_t spin(uint64_t iterations, uint64_t seed) {
    uint64_t x = seed | 1; /* xorshift's state must not be 0 */
    for (uint64_t i = 0; i < iterations; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

static int listen_on(const char *address, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *found;
    int rc = getaddrinfo(address, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "work_server: %s:%s: %s\n", address, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        fprintf(stderr, "work_server: listen on %s:%s: %s\n", address, port, strerror(errno));
        freeaddrinfo(found);
        if (fd >= 0) close(fd);
        return -1;
    }
    freeaddrinfo(found);
    return fd;
}

static int send_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR && !stopping) continue;
        if (n <= 0) return -1;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

/* Read up to the end of the headers; 1 when complete, 0 when the peer gave up or it is too long. */
static int read_request(int fd, uint64_t *seed) {
    static char request[REQUEST_LIMIT + 1];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, request + have, REQUEST_LIMIT - have, 0);
        if (n < 0 && errno == EINTR && !stopping) continue;
        if (n <= 0) return 0;
        have += (size_t)n;
        request[have] = '\0';
        if (strstr(request, "\r\n\r\n")) break;
        if (have == REQUEST_LIMIT) return 0;
    }
    /* The seed comes from the request's bytes, so it is only known at run time. */
    uint64_t hash = 1469598103934665603ULL;
    for (size_t i = 0; i < have; i++) hash = (hash ^ (unsigned char)request[i]) * 1099511628211ULL;
    *seed = hash;
    return 1;
}

static void serve_one(int fd, uint64_t iterations) {
    uint64_t seed;
    if (!read_request(fd, &seed)) return;
    uint64_t result = spin(iterations, seed);
    char body[128], response[512];
    int body_length = snprintf(body, sizeof body, "{\"iterations\": %" PRIu64 ", \"result\": \"%016" PRIx64 "\"}\n",
                               iterations, result);
    int length = snprintf(response, sizeof response,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          "Connection: close\r\n\r\n%s",
                          body_length, body);
    send_all(fd, response, (size_t)length);
}

static void usage(void) {
    fprintf(stderr, "usage: work_server --bind ADDR --port PORT --iterations N\n");
}

int main(int argc, char **argv) {
    const char *bind_address = NULL, *port = NULL, *iterations_text = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--bind") == 0) bind_address = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0) port = argv[i + 1];
        else if (strcmp(argv[i], "--iterations") == 0) iterations_text = argv[i + 1];
        else {
            fprintf(stderr, "work_server: unknown option %s\n", argv[i]);
            usage();
            return 2;
        }
    }
    if (argc % 2 != 1 || !bind_address || !port || !iterations_text) {
        usage();
        return 2;
    }
    char *end;
    errno = 0;
    unsigned long long iterations = strtoull(iterations_text, &end, 10);
    if (errno || *end || end == iterations_text || iterations_text[0] == '-' || iterations == 0) {
        fprintf(stderr, "work_server: --iterations must be a positive whole number, got %s\n", iterations_text);
        return 2;
    }

    /* No SA_RESTART: a signal makes a blocked accept() or recv() return EINTR. */
    struct sigaction action = {.sa_handler = on_stop};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    int listener = listen_on(bind_address, port);
    if (listener < 0) return 1;
    fprintf(stderr, "work_server: listening on %s:%s, %llu iterations per request\n", bind_address, port, iterations);

    unsigned long long served = 0;
    while (!stopping) {
        int connection = accept(listener, NULL, NULL);
        if (connection < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fprintf(stderr, "work_server: accept: %s\n", strerror(errno));
            close(listener);
            return 1;
        }
        serve_one(connection, iterations);
        close(connection);
        served++;
    }
    close(listener);
    fprintf(stderr, "work_server: stopped; connections served: %llu\n", served);
    return 0;
}
