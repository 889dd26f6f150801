/* openat2(2) for the passthrough sandbox, as a plain C call.
 *
 * Python has no wrapper, and the ctypes one (syscalls.openat2) builds half a dozen ctypes
 * objects per call: every path the backend resolves pays it, and with the CPU caches cold (a
 * guest between two requests) it cost about as much as the system call itself. Same
 * semantics as the ctypes wrapper: a new descriptor, or OSError with the host errno and the
 * path. The GIL is released around the call, which can block on a slow file system.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437 /* the same number on every architecture (the generic table) */
#endif

static PyObject *openat2_call(PyObject *Py_UNUSED(module), PyObject *args) {
    int dirfd;
    PyObject *path;
    unsigned long long flags, mode, resolve;
    if (!PyArg_ParseTuple(args, "iSKKK:openat2", &dirfd, &path, &flags, &mode, &resolve))
        return NULL;
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    const char *name = PyBytes_AS_STRING(path);
    if ((size_t)PyBytes_GET_SIZE(path) != strlen(name)) {
        PyErr_SetString(PyExc_ValueError, "openat2: embedded null byte");
        return NULL;
    }
    long fd;
    Py_BEGIN_ALLOW_THREADS
    fd = syscall(SYS_openat2, dirfd, name, &how, sizeof how);
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        int code = errno;
        PyObject *filename = PyUnicode_DecodeFSDefaultAndSize(name, PyBytes_GET_SIZE(path));
        if (filename == NULL)
            return NULL;
        errno = code;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, filename);
        Py_DECREF(filename);
        return NULL;
    }
    return PyLong_FromLong(fd);
}

static PyMethodDef methods[] = {
    {"openat2", openat2_call, METH_VARARGS,
     "openat2(dirfd, path: bytes, flags, mode, resolve) -> fd: path resolved from dirfd under "
     "the RESOLVE_* restrictions."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_openat2", "openat2(2) as a C call.", -1, methods,
};

PyMODINIT_FUNC PyInit__openat2(void) { return PyModule_Create(&module); }
