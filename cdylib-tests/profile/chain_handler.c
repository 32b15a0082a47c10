/*
 * A library whose constructor installs a handler for memx's dump signal (SIGRTMIN+10) before memx's
 * (preloaded after libmemx.so, so its constructor runs first). memx must
 * chain to it: the handler writes "earlier handler ran" to stderr.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void on_usr2(int sig, siginfo_t *info, void *ctx)
{
    (void)sig, (void)info, (void)ctx;
    static const char msg[] = "earlier handler ran\n";
    (void)!write(2, msg, sizeof msg - 1);
}

__attribute__((constructor)) static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN + 10, &sa, NULL);
}
