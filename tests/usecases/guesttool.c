/* guesttool: the few things a busybox guest cannot do with its shell, for the tests in which
 * two guests share one directory (tests/usecases/test_two_guests.py, bench/guest_two_guests.py).
 * Built on the host with `gcc -static` at test time and copied into each guest.
 *
 *   guesttool lock FILE NAME HOLD_MS  F_SETLKW a write lock on FILE (whole file), append
 *                                     "NAME got", hold HOLD_MS, append "NAME put", unlock.
 *                                     Prints "got" when it holds the lock, then "waited_ms=N".
 *   guesttool wait PATH TIMEOUT_MS    wait until PATH exists (a marker another guest creates).
 *   guesttool trylock FILE            F_SETLK once: exit 0 if it was free (then unlock), 3 if
 *                                     another owner holds it, 1 on any other error.
 *   guesttool pingpong DIR ME PEER ROUNDS LEADER TIMEOUT_MS
 *                                     marker ping-pong (new files ME.k / PEER.k); the leader
 *                                     prints "hop_ms=X" (round trip / 2, averaged).
 *   guesttool writer FILE DIR ROUNDS TIMEOUT_MS
 *                                     per round: write round i's content to FILE, close, create
 *                                     DIR/closed.i, wait for DIR/got.i; prints "rtt_ms=X max_ms=Y".
 *   guesttool reader FILE DIR ROUNDS TIMEOUT_MS
 *                                     per round: wait for DIR/closed.i, read FILE until it is
 *                                     round i's whole content, create DIR/got.i; prints
 *                                     "whole_at_once=N stale_ms_avg=X stale_ms_max=Y".
 *   guesttool journal FILE TAG SYNC_EVERY
 *                                     append records to FILE (see journal_record) without end,
 *                                     fsync every SYNC_EVERY records and then print
 *                                     "SYNCED TAG N" (N records are durable); killed by the test.
 *   guesttool verify FILE             read a journal: "records=N torn_tail=0|1", exit 1 if any
 *                                     complete record is out of sequence or fails its checksum.
 *
 * Timing is CLOCK_MONOTONIC inside one guest (two guests' clocks are not comparable). Exit 2:
 * a wait timed out; exit 1: a system call failed. Messages go to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define POLL_NS 2000000L /* 2 ms between looks: fast enough to measure, slow enough to share */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void pause_poll(void) {
    struct timespec ts = {0, POLL_NS};
    nanosleep(&ts, NULL);
}

static int fail(const char *what, const char *path) {
    fprintf(stderr, "guesttool: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

static int create_marker(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("create", path);
    close(fd);
    return 0;
}

/* 0 when path exists, 2 after timeout_ms. */
static int wait_exists(const char *path, double timeout_ms) {
    struct stat st;
    double deadline = now_ms() + timeout_ms;
    while (stat(path, &st) != 0) {
        if (now_ms() > deadline) {
            fprintf(stderr, "guesttool: %s did not appear in %.0f ms\n", path, timeout_ms);
            return 2;
        }
        pause_poll();
    }
    return 0;
}

static int append_line(int fd, const char *name, const char *what) {
    char line[128];
    int n = snprintf(line, sizeof line, "%s %s\n", name, what);
    return write(fd, line, n) == n ? 0 : -1;
}

static struct flock whole_file(short type) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    return fl; /* l_start = l_len = 0: the whole file */
}

static int cmd_lock(const char *file, const char *name, long hold_ms) {
    int fd = open(file, O_RDWR | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return fail("open", file);
    struct flock fl = whole_file(F_WRLCK);
    double start = now_ms();
    if (fcntl(fd, F_SETLKW, &fl) != 0) return fail("F_SETLKW", file);
    double waited = now_ms() - start;
    printf("got\n");
    fflush(stdout);
    if (append_line(fd, name, "got") != 0) return fail("write", file);
    struct timespec hold = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&hold, NULL);
    if (append_line(fd, name, "put") != 0) return fail("write", file);
    fl.l_type = F_UNLCK;
    if (fcntl(fd, F_SETLK, &fl) != 0) return fail("F_UNLCK", file);
    close(fd);
    printf("waited_ms=%.0f\n", waited);
    return 0;
}

static int cmd_trylock(const char *file) {
    int fd = open(file, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return fail("open", file);
    struct flock fl = whole_file(F_WRLCK);
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        if (errno == EAGAIN || errno == EACCES) return 3;
        return fail("F_SETLK", file);
    }
    fl.l_type = F_UNLCK;
    fcntl(fd, F_SETLK, &fl);
    close(fd);
    return 0;
}

static int cmd_pingpong(const char *dir, const char *me, const char *peer, int rounds, int leader,
                        double timeout_ms) {
    char mine[4096], theirs[4096];
    double start = now_ms();
    for (int k = 1; k <= rounds; k++) {
        snprintf(mine, sizeof mine, "%s/%s.%d", dir, me, k);
        snprintf(theirs, sizeof theirs, "%s/%s.%d", dir, peer, k);
        int rc;
        if (leader && (rc = create_marker(mine))) return rc;
        if ((rc = wait_exists(theirs, timeout_ms))) return rc;
        if (!leader && (rc = create_marker(mine))) return rc;
    }
    if (leader) printf("hop_ms=%.2f\n", (now_ms() - start) / (2.0 * rounds));
    return 0;
}

/* Round i's content: a number of lines growing with i, so a reader holding the previous
 * round's size reads a strict prefix, never the whole. Returns a malloc'ed buffer. */
static char *round_content(int round, size_t *size) {
    int lines = 100 + 37 * round;
    size_t cap = (size_t)lines * 48 + 64, used = 0;
    char *buf = malloc(cap);
    for (int k = 1; k <= lines; k++)
        used += snprintf(buf + used, cap - used, "round %d line %d of %d\n", round, k, lines);
    used += snprintf(buf + used, cap - used, "END %d\n", round);
    *size = used;
    return buf;
}

static int cmd_writer(const char *file, const char *dir, int rounds, double timeout_ms) {
    char marker[4096];
    double total = 0, worst = 0;
    for (int i = 1; i <= rounds; i++) {
        size_t size;
        char *content = round_content(i, &size);
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return fail("open", file);
        if (write(fd, content, size) != (ssize_t)size) return fail("write", file);
        if (close(fd) != 0) return fail("close", file);
        free(content);
        double closed = now_ms();
        snprintf(marker, sizeof marker, "%s/closed.%d", dir, i);
        int rc = create_marker(marker);
        if (rc) return rc;
        snprintf(marker, sizeof marker, "%s/got.%d", dir, i);
        if ((rc = wait_exists(marker, timeout_ms))) return rc;
        double rtt = now_ms() - closed;
        total += rtt;
        if (rtt > worst) worst = rtt;
    }
    printf("rtt_ms=%.2f max_ms=%.2f\n", total / rounds, worst);
    return 0;
}

/* 1 if file now holds exactly `want`, 0 if not (yet), -1 on error. */
static int holds(const char *file, const char *want, size_t size, char *buf) {
    int fd = open(file, O_RDONLY);
    if (fd < 0) return -1;
    size_t got = 0;
    ssize_t n;
    while (got <= size && (n = read(fd, buf + got, size + 1 - got)) > 0) got += n;
    close(fd);
    if (n < 0) return -1;
    return got == size && memcmp(buf, want, size) == 0;
}

static int cmd_reader(const char *file, const char *dir, int rounds, double timeout_ms) {
    char marker[4096];
    int at_once = 0;
    double total = 0, worst = 0;
    for (int i = 1; i <= rounds; i++) {
        snprintf(marker, sizeof marker, "%s/closed.%d", dir, i);
        int rc = wait_exists(marker, timeout_ms);
        if (rc) return rc;
        double seen = now_ms();
        size_t size;
        char *want = round_content(i, &size);
        char *buf = malloc(size + 1);
        int whole, first = 1;
        while ((whole = holds(file, want, size, buf)) != 1) {
            if (whole < 0) return fail("read", file);
            first = 0;
            if (now_ms() - seen > timeout_ms) {
                fprintf(stderr, "guesttool: round %d never read whole\n", i);
                return 2;
            }
            pause_poll();
        }
        double stale = now_ms() - seen;
        at_once += first;
        total += stale;
        if (stale > worst) worst = stale;
        free(want);
        free(buf);
        snprintf(marker, sizeof marker, "%s/got.%d", dir, i);
        if ((rc = create_marker(marker))) return rc;
    }
    printf("whole_at_once=%d stale_ms_avg=%.2f stale_ms_max=%.2f\n", at_once, total / rounds,
           worst);
    return 0;
}

/* A journal record: "%08d %016llx <PAYLOAD_LEN letters>\n" = sequence number (from 1), FNV-1a
 * of the payload, payload from a generator seeded by the sequence number. Any torn, zeroed or
 * shifted record fails the check. */
#define PAYLOAD_LEN 4000
#define RECORD_LEN (8 + 1 + 16 + 1 + PAYLOAD_LEN + 1)

static unsigned long long fnv1a(const char *data, size_t len) {
    unsigned long long h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)data[i]) * 1099511628211ULL;
    return h;
}

static void journal_record(long seq, char *out) {
    char payload[PAYLOAD_LEN];
    unsigned long long x = 0x9e3779b97f4a7c15ULL * (unsigned long long)seq + 1;
    for (int i = 0; i < PAYLOAD_LEN; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        payload[i] = 'a' + (char)(x % 26);
    }
    int head = snprintf(out, RECORD_LEN + 1, "%08ld %016llx ", seq, fnv1a(payload, PAYLOAD_LEN));
    memcpy(out + head, payload, PAYLOAD_LEN);
    out[RECORD_LEN - 1] = '\n';
}

static int cmd_journal(const char *file, const char *tag, long sync_every) {
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("open", file);
    char record[RECORD_LEN + 1];
    for (long seq = 1;; seq++) {
        journal_record(seq, record);
        if (write(fd, record, RECORD_LEN) != RECORD_LEN) return fail("write", file);
        if (seq % sync_every == 0) {
            if (fsync(fd) != 0) return fail("fsync", file);
            printf("SYNCED %s %ld\n", tag, seq);
            fflush(stdout);
        }
    }
}

static int cmd_verify(const char *file) {
    int fd = open(file, O_RDONLY);
    if (fd < 0) return fail("open", file);
    char got[RECORD_LEN], want[RECORD_LEN + 1];
    long seq = 0;
    ssize_t n;
    int torn = 0;
    for (;;) {
        size_t have = 0;
        while (have < RECORD_LEN && (n = read(fd, got + have, RECORD_LEN - have)) > 0) have += n;
        if (have == 0) break;
        if (have < RECORD_LEN) { /* the end of the file cuts a record: lost, not corrupt */
            torn = 1;
            break;
        }
        journal_record(++seq, want);
        if (memcmp(got, want, RECORD_LEN) != 0) {
            printf("records=%ld bad_record=%ld\n", seq - 1, seq);
            return 1;
        }
    }
    close(fd);
    printf("records=%ld torn_tail=%d\n", seq, torn);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "lock")) return cmd_lock(argv[2], argv[3], atol(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "trylock")) return cmd_trylock(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "wait")) return wait_exists(argv[2], atof(argv[3]));
    if (argc == 8 && !strcmp(argv[1], "pingpong"))
        return cmd_pingpong(argv[2], argv[3], argv[4], atoi(argv[5]), atoi(argv[6]),
                            atof(argv[7]));
    if (argc == 6 && !strcmp(argv[1], "writer"))
        return cmd_writer(argv[2], argv[3], atoi(argv[4]), atof(argv[5]));
    if (argc == 6 && !strcmp(argv[1], "reader"))
        return cmd_reader(argv[2], argv[3], atoi(argv[4]), atof(argv[5]));
    if (argc == 5 && !strcmp(argv[1], "journal")) return cmd_journal(argv[2], argv[3], atol(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "verify")) return cmd_verify(argv[2]);
    fprintf(stderr, "usage: guesttool lock|trylock|wait|pingpong|journal|verify|writer|reader ... (see above)\n");
    return 64;
}
