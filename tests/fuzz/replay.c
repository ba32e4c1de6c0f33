/*
 * tests/fuzz/replay.c - run a fuzz target over committed corpus files.
 *
 * Built with the ordinary compiler (and under `make asan` with sanitizers),
 * so `make test` replays every corpus without clang. Usage: replay DIR...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    long n = 0;
    eddy_alloc_install();
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        struct dirent *de;
        if (!d) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 1;
        }
        while ((de = readdir(d))) {
            char path[4096], *data;
            size_t len;
            eddy_err e;
            if (de->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
            if (eddy_read_file(path, &data, &len, &e)) {
                fprintf(stderr, "replay: %s\n", e.msg);
                closedir(d);
                return 1;
            }
            LLVMFuzzerTestOneInput((const uint8_t *)data, len);
            eddy_free(data);
            n++;
        }
        closedir(d);
    }
    printf("replayed %ld input(s)\n", n);
    return n > 0 ? 0 : 1;
}
