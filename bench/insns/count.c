/* lookd's instruction counter for qemu user mode: the number of guest instructions a program
 * executes, printed to stderr at exit as "insns: N". Built by bench/aarch64-insns.
 *
 * QEMU's plugin interface is a plain C ABI; Debian ships qemu-user with plugin support but
 * neither the example plugins nor qemu-plugin.h, so the few declarations used are written out in
 * qemu-plugin.h, as documented for plugin API version 1 (QEMU 7.x). At each translated block, an
 * inline add of the block's instruction count to one counter. Counts are exact for the guest
 * code executed, whatever the host; they say nothing of caches or pipelines. */
#include <inttypes.h>
#include <stdio.h>

#include "qemu-plugin.h"

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t executed;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    fprintf(stderr, "insns: %" PRIu64 "\n", executed);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
