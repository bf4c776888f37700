/* Big-endian 32-bit lengths, as the PostgreSQL protocol and the spool's packed frames (agent.spool.pack_items)
   write them; shared by agent/_chain.c and agent/proxy/_framer.c. */
#ifndef CUSTOS_BE32_H
#define CUSTOS_BE32_H

#include <stdint.h>

static inline uint32_t
get_u32(const void *at)
{
    const unsigned char *u = at;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | (uint32_t)u[3];
}

static inline void
put_u32(void *at, uint32_t v)
{
    unsigned char *u = at;
    u[0] = (unsigned char)(v >> 24);
    u[1] = (unsigned char)(v >> 16);
    u[2] = (unsigned char)(v >> 8);
    u[3] = (unsigned char)v;
}

#endif
