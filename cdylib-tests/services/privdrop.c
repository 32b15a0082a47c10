#define _GNU_SOURCE
/*
 * Drops root privileges itself, as a server does after binding its port:
 * setgroups, setresgid, setresuid (glibc replays each on every thread of the
 * process; a thread of memx's that lacked the rights would make it abort).
 * Allocates, says "ready <pid>", and waits in read() for a line on stdin:
 * a dump must still arrive on request while it is blocked there.
 * Usage: privdrop UID GID
 */
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *keep[64];

__attribute__((noinline)) static void after_drop_alloc(void)
{
    for (int i = 0; i < 64; i++) {
        keep[i] = malloc(256 << 10);
        memset(keep[i], 1, 256 << 10);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    uid_t uid = (uid_t)atoi(argv[1]);
    gid_t gid = (gid_t)atoi(argv[2]);
    gid_t groups[1] = {gid};
    if (setgroups(1, groups) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
        perror("privdrop: dropping privileges");
        return 1;
    }
    if (getuid() != uid || geteuid() != uid)
        return 1;
    after_drop_alloc();
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[16];
    if (read(0, buf, sizeof buf) < 0)
        return 1;
    return 0;
}
