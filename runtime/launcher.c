/* The two static programs of the clrk-runtime tree (see runtime/Dockerfile), from this one source.
 *
 *   cc -static -DCLRK_LOADER='"ld-linux-x86-64.so.2"' -DCLRK_PYTHON  ->  <root>/python/bin/python3
 *       runs <root>/python/bin/python3.real through <root>/lib/CLRK_LOADER with <root>/lib as its
 *       only library path, and tells it (--argv0) that its name is this wrapper: so the Python's
 *       sys.executable is this static file, and whatever the shim starts with sys.executable (its
 *       spawner) works on any root filesystem too.
 *   cc -static -DCLRK_LOADER='"ld-linux-x86-64.so.2"'                ->  <root>/bin/clrk-shim
 *       the same Python, isolated (-I: no PYTHON* variable, no user site) and writing no bytecode
 *       (-B: the tree is mounted read-only), running <root>/python/bin/clrk-shim, the console
 *       script pip wrote from runtime/pyproject.toml.
 *
 * Both find <root> through /proc/self/exe, so the tree works wherever it is copied. Linked
 * statically: they need no loader, no libc and no shell of the image they run in. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CLRK_LOADER
#error "define CLRK_LOADER, the file name of the bundled dynamic loader"
#endif

static void cut(char *path) {
  char *slash = strrchr(path, '/');
  if (slash) *slash = '\0';
}

static char *join(const char *root, const char *rest) {
  size_t size = strlen(root) + strlen(rest) + 1;
  char *path = malloc(size);
  if (!path) exit(127);
  snprintf(path, size, "%s%s", root, rest);
  return path;
}

int main(int argc, char **argv) {
  char root[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", root, sizeof root - 1);
  if (n < 0) {
    perror("clrk-runtime: readlink /proc/self/exe");
    return 127;
  }
  root[n] = '\0';
#ifdef CLRK_PYTHON
  cut(root); cut(root); cut(root); /* <root>/python/bin/python3 -> <root> */
#else
  cut(root); cut(root);            /* <root>/bin/clrk-shim -> <root> */
#endif
  /* Only this process tree's Python uses the bundled libraries; nothing of the image's own
   * dynamic linking setup may reach it. (The agents' environments are built by the shim.) */
  unsetenv("LD_PRELOAD");
  unsetenv("LD_LIBRARY_PATH");
  unsetenv("LD_AUDIT");
  char **args = calloc((size_t)argc + 12, sizeof *args);
  if (!args) return 127;
  int i = 0;
  args[i++] = join(root, "/lib/" CLRK_LOADER);
  args[i++] = "--library-path";
  args[i++] = join(root, "/lib");
  args[i++] = "--inhibit-cache";
  args[i++] = "--argv0";
  args[i++] = join(root, "/python/bin/python3");
  args[i++] = join(root, "/python/bin/python3.real");
#ifndef CLRK_PYTHON
  args[i++] = "-I";
  args[i++] = "-B";
  args[i++] = join(root, "/python/bin/clrk-shim");
#endif
  for (int j = 1; j < argc; j++) args[i++] = argv[j];
  args[i] = NULL;
  execv(args[0], args);
  fprintf(stderr, "clrk-runtime: cannot run the bundled loader %s: ", args[0]);
  perror(NULL);
  return 127;
}
