/* lookd's instruction profile for qemu user mode: guest instructions executed per function
 * symbol, printed to stderr at exit as "profile: N symbol" lines (largest first), then
 * "insns: N" (the total, as count.c prints it). Used by bench/aarch64-insns with PROFILE=1.
 *
 * The plugin interface is declared in qemu-plugin.h; the three calls used here and not in count.c
 * are in QEMU 7.2's plugin API version 1: a block's first instruction, its address, and the
 * symbol qemu finds for it in the guest binary's symbol table. A block is charged to the function its first
 * instruction lies in; blocks end at branches, so a block rarely spans two functions. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* One record per translated block: its function and the instructions it has executed. */
struct block {
    const char *symbol;
    uint64_t executed;
    struct block *next;
};
static struct block *blocks;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    struct block *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return;
    }
    const char *s = qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, 0));
    if (s == NULL) {
        /* Code without a symbol (shared libraries, hand-written assembly): named by its 4 KiB
         * page, so that a hot loop can still be found with the binary's or library's map. */
        char page[32];
        snprintf(page, sizeof page, "?0x%" PRIx64, qemu_plugin_tb_vaddr(tb) & ~(uint64_t)0xfff);
        s = strdup(page);
    }
    b->symbol = s != NULL ? s : "(no symbol)";
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->executed,
                                             qemu_plugin_tb_n_insns(tb));
}

struct total {
    const char *symbol;
    uint64_t executed;
};

static int by_name(const void *a, const void *b) {
    return strcmp(((const struct total *)a)->symbol, ((const struct total *)b)->symbol);
}

static int by_count(const void *a, const void *b) {
    uint64_t x = ((const struct total *)a)->executed, y = ((const struct total *)b)->executed;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void report(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    size_t n = 0;
    for (struct block *b = blocks; b != NULL; b = b->next) {
        n++;
    }
    struct total *t = calloc(n + 1, sizeof *t);
    if (t == NULL) {
        return;
    }
    size_t i = 0;
    uint64_t all = 0;
    for (struct block *b = blocks; b != NULL; b = b->next, i++) {
        t[i].symbol = b->symbol;
        t[i].executed = b->executed;
        all += b->executed;
    }
    qsort(t, n, sizeof *t, by_name);
    size_t m = 0; /* merge equal names */
    for (i = 0; i < n; i++) {
        if (m > 0 && strcmp(t[m - 1].symbol, t[i].symbol) == 0) {
            t[m - 1].executed += t[i].executed;
        } else {
            t[m++] = t[i];
        }
    }
    qsort(t, m, sizeof *t, by_count);
    for (i = 0; i < m && t[i].executed > 0; i++) {
        fprintf(stderr, "profile: %" PRIu64 " %s\n", t[i].executed, t[i].symbol);
    }
    fprintf(stderr, "insns: %" PRIu64 "\n", all);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, report, NULL);
    return 0;
}
