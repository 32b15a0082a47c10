/*
 * inbox.h: a bounded, mutex-guarded FIFO of objects handed from one thread
 * to another (a header, so scripts/cdylib-tests.sh does not build it as a
 * test). The includer defines `struct obj` and INBOX (the capacity) first.
 * Used by threads_stress and soak, whose workers free each other's objects.
 */
#ifndef INBOX_H
#define INBOX_H

#include <pthread.h>

struct inbox {
    pthread_mutex_t mu;
    struct obj q[INBOX];
    int head, len;
};

/* Appends `o`; 0 if the inbox is full. */
static int inbox_post(struct inbox *b, struct obj o)
{
    pthread_mutex_lock(&b->mu);
    int ok = b->len < INBOX;
    if (ok) {
        b->q[(b->head + b->len) % INBOX] = o;
        b->len++;
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

/* Takes the oldest object into `*o`; 0 if the inbox is empty. */
static int inbox_take(struct inbox *b, struct obj *o)
{
    pthread_mutex_lock(&b->mu);
    int ok = b->len > 0;
    if (ok) {
        *o = b->q[b->head];
        b->head = (b->head + 1) % INBOX;
        b->len--;
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

#endif
