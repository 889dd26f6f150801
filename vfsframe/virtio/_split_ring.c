/* The split-virtqueue data path in C: popping descriptor chains and filling the used ring
 * (SplitRing), and a queue thread's serving step around the session's handle (ChainServer).
 *
 * vfsframe/virtio/split_ring.py and dispatch.QueueService._serve_one are the reference: this
 * module behaves exactly like them (same chains, same views, same messages; tests/virtio
 * compares the two on random rings and runs every device test on each) and exists only because
 * a guest request spends much of its server time in these few loops when they are Python
 * (docs/virtio.md, "Where a guest request's time goes").
 *
 * The guest may rewrite its rings at any moment, so every guest value is loaded exactly once
 * (copied, then a compiler barrier, so it cannot be loaded again) and checked before use.
 * Every buffer becomes a memoryview sharing the managed buffer of the region's own view, so a
 * mapping lives as long as any view of it, as with views made in Python.
 *
 * No Python code runs between reading a ring index and updating it (no allocation, no call),
 * so under the GIL each pop, push and re-arm is atomic with respect to the other threads of
 * the queue: several of them pop from and push to one ring.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define DESC_F_INDIRECT 4
#define AVAIL_F_NO_INTERRUPT 1
#define MESSAGE_MAX 160

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

/* What the guest wrote is whatever the copy holds: no later load may replace it. */
#define guest_barrier() __asm__ __volatile__("" ::: "memory")

static PyObject *Chain;       /* vfsframe.virtio.descriptors.Chain */
static PyObject *RingCorrupt; /* vfsframe.virtio.descriptors.RingCorrupt */

typedef struct {
    uint64_t guest_addr;
    unsigned __int128 guest_end; /* may be 2**64 */
    char *base;
    PyObject *view; /* our own memoryview of the region; chain views share its buffer */
} Region;

typedef struct {
    PyObject_HEAD
    Region *regions;
    Py_ssize_t nregions;
    Py_buffer rings[3]; /* descriptor table, avail ring, used ring */
    int held;           /* how many of rings[] are held */
    const char *desc;
    const char *avail;
    char *used;
    uint32_t size;
    uint16_t last_avail;
    uint16_t used_idx;
    int indirect;
    int event_idx;
    int closed;
} Ring;

static uint16_t load16(const char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    guest_barrier();
    return v;
}

static uint16_t load16_acquire(const char *p)
{
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

static void load_desc(const char *p, struct desc *d)
{
    memcpy(d, p, sizeof *d);
    guest_barrier();
}

/* Guest value, host order: this module builds only for little-endian hosts (setup.py). */
static uint16_t avail_idx(Ring *r) { return load16_acquire(r->avail + 2); }
static uint16_t used_event(Ring *r) { return load16(r->avail + 4 + 2 * (size_t)r->size); }

static void set_corrupt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void set_corrupt(const char *fmt, ...)
{
    char message[MESSAGE_MAX];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    PyErr_SetString(RingCorrupt, message);
}

/* -- guest memory ------------------------------------------------------------------------ */

static Region *region_at(Ring *r, uint64_t addr)
{
    Py_ssize_t low = 0, high = r->nregions;
    while (low < high) { /* the last region starting at or below addr */
        Py_ssize_t mid = (low + high) / 2;
        if (r->regions[mid].guest_addr <= addr)
            low = mid + 1;
        else
            high = mid;
    }
    if (low == 0)
        return NULL;
    Region *region = &r->regions[low - 1];
    return addr < region->guest_end ? region : NULL;
}

static Region *region_containing(Ring *r, uint64_t addr, uint64_t length)
{
    Region *region = region_at(r, addr);
    if (region && (unsigned __int128)addr + length <= region->guest_end)
        return region;
    return NULL;
}

/* A view of region bytes [start, end): a new memoryview on the region view's managed buffer,
 * narrowed the way memoryview slicing narrows one (1-D, unsigned bytes, stride 1). */
static PyObject *region_slice(Region *region, uint64_t start, uint64_t end)
{
    PyObject *view = PyMemoryView_FromObject(region->view);
    if (view == NULL)
        return NULL;
    Py_buffer *buffer = PyMemoryView_GET_BUFFER(view);
    buffer->buf = region->base + start;
    buffer->len = (Py_ssize_t)(end - start);
    buffer->shape[0] = buffer->len;
    return view;
}

static int append_slice(PyObject *list, Region *region, uint64_t start, uint64_t end)
{
    PyObject *view = region_slice(region, start, end);
    if (view == NULL)
        return -1;
    int rc = PyList_Append(list, view);
    Py_DECREF(view);
    return rc;
}

/* GuestMemory.gather: views of a range that may span adjacent regions; all or nothing.
 * Returns 1 with `message` set for a range outside guest memory, -1 on a Python error. */
static int gather(Ring *r, PyObject *out, uint64_t addr, uint64_t length, char *message)
{
    if ((unsigned __int128)addr + length > ((unsigned __int128)1 << 64)) {
        snprintf(message, MESSAGE_MAX, "guest range 0x%" PRIx64 "+0x%" PRIx64 " overflows",
                 addr, length);
        return 1;
    }
    Py_ssize_t first = PyList_GET_SIZE(out);
    while (length) {
        Region *region = region_at(r, addr);
        if (region == NULL) {
            snprintf(message, MESSAGE_MAX, "guest address 0x%" PRIx64 " is outside guest memory",
                     addr);
            return PyList_SetSlice(out, first, PyList_GET_SIZE(out), NULL) < 0 ? -1 : 1;
        }
        uint64_t start = addr - region->guest_addr;
        unsigned __int128 room = region->guest_end - (unsigned __int128)addr;
        uint64_t take = length < room ? length : (uint64_t)room;
        if (append_slice(out, region, start, start + take) < 0)
            return -1;
        addr += take; /* wraps to 0 only when length is then 0 */
        length -= take;
    }
    return 0;
}

/* -- runs: one view per run of buffers that follow one another in a region (split_ring._Runs) */

typedef struct {
    PyObject *out;
    Region *region; /* of the run being extended, or NULL */
    uint64_t start, end;
} Runs;

static int runs_flush(Runs *runs)
{
    if (runs->region == NULL)
        return 0;
    Region *region = runs->region;
    runs->region = NULL;
    return append_slice(runs->out, region, runs->start, runs->end);
}

/* 0: added; 1: outside guest memory (message set); -1: Python error. */
static int runs_add(Ring *r, Runs *runs, uint64_t addr, uint32_t length, char *message)
{
    Region *region = runs->region;
    if (region != NULL) {
        if (addr == region->guest_addr + runs->end &&
            (unsigned __int128)addr + length <= region->guest_end) {
            runs->end += length;
            return 0;
        }
        if (runs_flush(runs) < 0)
            return -1;
    }
    if (length == 0)
        return 0;
    region = region_containing(r, addr, length);
    if (region == NULL)
        return gather(r, runs->out, addr, length, message);
    runs->region = region;
    runs->start = addr - region->guest_addr;
    runs->end = runs->start + length;
    return 0;
}

/* -- the ring ---------------------------------------------------------------------------- */

static void ring_release(Ring *r)
{
    for (int i = 0; i < r->held; i++)
        PyBuffer_Release(&r->rings[i]);
    r->held = 0;
    for (Py_ssize_t i = 0; i < r->nregions; i++)
        Py_CLEAR(r->regions[i].view);
    PyMem_Free(r->regions);
    r->regions = NULL;
    r->nregions = 0;
    r->desc = r->avail = NULL;
    r->used = NULL;
    r->closed = 1;
}

static void Ring_dealloc(Ring *r)
{
    ring_release(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int hold_ring(Ring *r, PyObject *view, Py_ssize_t need, size_t align, const char *what)
{
    Py_buffer *buffer = &r->rings[r->held];
    if (PyObject_GetBuffer(view, buffer, PyBUF_WRITABLE) < 0)
        return -1;
    r->held++;
    if (buffer->len < need || (uintptr_t)buffer->buf % align) {
        PyErr_Format(PyExc_ValueError, "%s ring view is too short or misaligned", what);
        return -1;
    }
    return 0;
}

static int add_regions(Ring *r, PyObject *memory)
{
    PyObject *regions = PyObject_GetAttrString(memory, "regions");
    if (regions == NULL)
        return -1;
    PyObject *sequence = PySequence_Fast(regions, "GuestMemory.regions must be a sequence");
    Py_DECREF(regions);
    if (sequence == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(sequence);
    r->regions = PyMem_Calloc(n ? n : 1, sizeof(Region));
    if (r->regions == NULL) {
        Py_DECREF(sequence);
        PyErr_NoMemory();
        return -1;
    }
    int rc = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(sequence, i);
        PyObject *addr = PyObject_GetAttrString(item, "guest_addr");
        PyObject *view = addr ? PyObject_GetAttrString(item, "view") : NULL;
        Region *region = &r->regions[i];
        if (view != NULL) {
            region->guest_addr = PyLong_AsUnsignedLongLong(addr);
            region->view = PyMemoryView_Check(view) ? PyMemoryView_FromObject(view) : NULL;
        }
        Py_XDECREF(addr);
        Py_XDECREF(view);
        if (region->view == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a region's view must be a memoryview");
            goto done;
        }
        r->nregions = i + 1;
        if (PyErr_Occurred())
            goto done;
        Py_buffer *buffer = PyMemoryView_GET_BUFFER(region->view);
        if (buffer->ndim != 1 || buffer->itemsize != 1 || buffer->strides[0] != 1 ||
            buffer->readonly) {
            PyErr_SetString(PyExc_TypeError, "a region's view must be writable bytes");
            goto done;
        }
        region->base = buffer->buf;
        region->guest_end = region->guest_addr + (unsigned __int128)buffer->len;
        if (i && region->guest_addr < r->regions[i - 1].guest_end) {
            PyErr_SetString(PyExc_ValueError, "regions must be sorted and not overlap");
            goto done;
        }
    }
    rc = 0;
done:
    Py_DECREF(sequence);
    return rc;
}

static PyObject *Ring_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"memory",     "size",     "desc",      "avail", "used",
                               "last_avail", "indirect", "event_idx", NULL};
    PyObject *memory, *desc, *avail, *used;
    unsigned int size, last_avail;
    int indirect, event_idx;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OIOOOIpp:SplitRing", keywords, &memory, &size,
                                     &desc, &avail, &used, &last_avail, &indirect, &event_idx))
        return NULL;
    if (size == 0 || size > 32768 || (size & (size - 1)) || last_avail > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "bad queue size or base index");
        return NULL;
    }
    Ring *r = (Ring *)type->tp_alloc(type, 0);
    if (r == NULL)
        return NULL;
    r->size = size;
    r->last_avail = (uint16_t)last_avail;
    r->indirect = indirect;
    r->event_idx = event_idx;
    if (add_regions(r, memory) < 0 || hold_ring(r, desc, 16 * (Py_ssize_t)size, 1, "desc") < 0 ||
        hold_ring(r, avail, 6 + 2 * (Py_ssize_t)size, 2, "avail") < 0 ||
        hold_ring(r, used, 6 + 8 * (Py_ssize_t)size, 4, "used") < 0) {
        Py_DECREF(r);
        return NULL;
    }
    r->desc = r->rings[0].buf;
    r->avail = r->rings[1].buf;
    r->used = r->rings[2].buf;
    r->used_idx = load16(r->used + 2);
    return (PyObject *)r;
}

/* The table an indirect descriptor points at, or NULL with RingCorrupt set. */
static const char *indirect_table(Ring *r, unsigned head, const struct desc *d, int nested)
{
    Region *region = NULL;
    if (!r->indirect)
        set_corrupt("chain from head %u uses an indirect table not negotiated", head);
    else if (nested)
        set_corrupt("chain from head %u nests an indirect table", head);
    else if (d->flags & DESC_F_NEXT)
        set_corrupt("chain from head %u: indirect descriptor also has NEXT", head);
    else if (d->len == 0 || d->len % 16 || d->len / 16 > r->size)
        set_corrupt("chain from head %u: indirect table of %" PRIu32 " bytes", head, d->len);
    else if ((unsigned __int128)d->addr + d->len > ((unsigned __int128)1 << 64))
        set_corrupt("chain from head %u: indirect table: guest range 0x%" PRIx64 "+0x%" PRIx32
                    " is invalid", head, d->addr, d->len);
    else if ((region = region_containing(r, d->addr, d->len)) == NULL)
        set_corrupt("chain from head %u: indirect table: guest range 0x%" PRIx64 "+0x%" PRIx32
                    " is not in one region", head, d->addr, d->len);
    return region ? region->base + (d->addr - region->guest_addr) : NULL;
}

/* A popped chain: its buffers as views, and what is wrong with them if anything is. */
typedef struct {
    unsigned head;
    PyObject *readable; /* lists of memoryviews, owned */
    PyObject *writable;
    char error[MESSAGE_MAX]; /* "" for a chain that can be served */
} Popped;

static void popped_clear(Popped *p)
{
    Py_CLEAR(p->readable);
    Py_CLEAR(p->writable);
}

/* split_ring.PyRing._walk: 0 with *p filled, -1 with an exception set. */
static int walk(Ring *r, unsigned head, Popped *p)
{
    if (head >= r->size) {
        set_corrupt("head index %u outside a %" PRIu32 "-entry ring", head, r->size);
        return -1;
    }
    p->head = head;
    p->error[0] = '\0';
    p->readable = PyList_New(0);
    p->writable = PyList_New(0);
    if (p->readable == NULL || p->writable == NULL)
        goto fail;
    Runs readable_runs = {p->readable, NULL, 0, 0};
    Runs writable_runs = {p->writable, NULL, 0, 0};
    char message[MESSAGE_MAX];
    const char *table = r->desc;
    uint32_t table_len = r->size;
    int in_indirect = 0;
    uint32_t index = head;
    uint32_t seen = 0;
    for (;;) {
        if (++seen > r->size) {
            set_corrupt("chain from head %u is longer than the queue (a loop?)", head);
            goto fail;
        }
        struct desc d;
        load_desc(table + 16 * (size_t)index, &d);
        if (d.flags & DESC_F_INDIRECT) {
            table = indirect_table(r, head, &d, in_indirect);
            if (table == NULL)
                goto fail;
            table_len = d.len / 16;
            in_indirect = 1;
            index = 0;
            continue;
        }
        /* A bad buffer is skipped, not fatal: see split_ring.PyRing._walk. */
        int rc = 0;
        message[0] = '\0';
        if (d.flags & DESC_F_WRITE)
            rc = runs_add(r, &writable_runs, d.addr, d.len, message);
        else if (PyList_GET_SIZE(p->writable) || writable_runs.region != NULL)
            snprintf(message, sizeof message,
                     "a device-readable buffer follows a device-writable one");
        else
            rc = runs_add(r, &readable_runs, d.addr, d.len, message);
        if (rc < 0)
            goto fail;
        if (message[0] && !p->error[0])
            memcpy(p->error, message, sizeof p->error);
        if (!(d.flags & DESC_F_NEXT))
            break;
        if (d.next >= table_len) {
            set_corrupt("chain from head %u: next index %u out of range", head, d.next);
            goto fail;
        }
        index = d.next;
    }
    if (runs_flush(&readable_runs) < 0 || runs_flush(&writable_runs) < 0)
        goto fail;
    return 0;
fail:
    popped_clear(p);
    return -1;
}

/* The next available chain: 1 with *p filled, 0 if there is none, -1 with an exception. */
static int pop_chain(Ring *r, Popped *p)
{
    if (r->closed)
        return 0;
    uint16_t pending = (uint16_t)(avail_idx(r) - r->last_avail);
    if (pending == 0)
        return 0;
    if (pending > r->size) {
        set_corrupt("avail index moved %u entries ahead of a %" PRIu32 "-entry ring",
                    (unsigned)pending, r->size);
        return -1;
    }
    uint16_t head = load16(r->avail + 4 + 2 * (size_t)(r->last_avail % r->size));
    r->last_avail++;
    return walk(r, head, p) < 0 ? -1 : 1;
}

static PyObject *make_chain(Popped *p)
{
    PyObject *head = PyLong_FromUnsignedLong(p->head);
    PyObject *why = p->error[0] ? PyUnicode_FromString(p->error) : Py_NewRef(Py_None);
    PyObject *chain = NULL;
    if (head != NULL && why != NULL) {
        PyObject *fields[] = {head, p->readable, p->writable, why};
        chain = PyObject_Vectorcall(Chain, fields, 4, NULL);
    }
    Py_XDECREF(head);
    Py_XDECREF(why);
    return chain;
}

static PyObject *Ring_pop(Ring *r, PyObject *Py_UNUSED(ignored))
{
    Popped p;
    int rc = pop_chain(r, &p);
    if (rc <= 0)
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *chain = make_chain(&p);
    popped_clear(&p);
    return chain;
}

/* Return a chain to the driver, and signal call_fd (< 0: none) if it asked to hear. */
static void push(Ring *r, uint32_t head, uint32_t length, long call_fd)
{
    if (r->closed)
        return; /* the queue was stopped under us; the front-end reset it */
    uint16_t old = r->used_idx;
    uint16_t new = old + 1;
    uint32_t fields[2] = {head, length};
    memcpy(r->used + 4 + 8 * (size_t)(old % r->size), fields, sizeof fields);
    r->used_idx = new;
    __atomic_store_n((uint16_t *)(r->used + 2), new, __ATOMIC_RELEASE);
    /* The index store must be visible before we read whether the driver wants to hear. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (call_fd < 0)
        return;
    if (r->event_idx) {
        uint16_t event = used_event(r);
        if ((uint16_t)(new - event - 1) >= (uint16_t)(new - old))
            return; /* virtio's vring_need_event says no */
    } else if (load16(r->avail) & AVAIL_F_NO_INTERRUPT) {
        return;
    }
    uint64_t one = 1;
    ssize_t written = write((int)call_fd, &one, sizeof one);
    (void)written; /* a call fd closed under us: the front-end is resetting the queue */
}

/* Ask for a kick for the next chain; true if one arrived meanwhile. */
static int arm_kick(Ring *r)
{
    if (r->closed)
        return 0;
    if (r->event_idx) {
        __atomic_store_n((uint16_t *)(r->used + 4 + 8 * (size_t)r->size), r->last_avail,
                         __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
    return avail_idx(r) != r->last_avail;
}

static PyObject *Ring_push(Ring *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "push(head, length, call_fd)");
        return NULL;
    }
    unsigned long head = PyLong_AsUnsignedLong(args[0]);
    unsigned long length = PyLong_AsUnsignedLong(args[1]);
    long call_fd = PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    push(r, (uint32_t)head, (uint32_t)length, call_fd);
    Py_RETURN_NONE;
}

static PyObject *Ring_arm_kick(Ring *r, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(arm_kick(r));
}

static PyObject *Ring_pending(Ring *r, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!r->closed && avail_idx(r) != r->last_avail);
}

static PyObject *Ring_close(Ring *r, PyObject *Py_UNUSED(ignored))
{
    ring_release(r);
    Py_RETURN_NONE;
}

static PyObject *Ring_get_last_avail(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(r->last_avail);
}

static PyObject *Ring_get_used_idx(Ring *r, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(r->used_idx);
}

static PyMethodDef Ring_methods[] = {
    {"pop", (PyCFunction)Ring_pop, METH_NOARGS,
     "The next available chain, or None. Raises RingCorrupt."},
    {"push", (PyCFunction)(void (*)(void))Ring_push, METH_FASTCALL,
     "push(head, length, call_fd): return a chain; signal call_fd (-1: none) if the driver "
     "asked."},
    {"arm_kick", (PyCFunction)Ring_arm_kick, METH_NOARGS,
     "Ask for a kick for the next chain; True if one arrived meanwhile."},
    {"pending", (PyCFunction)Ring_pending, METH_NOARGS, "Whether chains wait to be popped."},
    {"close", (PyCFunction)Ring_close, METH_NOARGS,
     "Stop: pop and push do nothing from now on, and the rings' views are released."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Ring_getset[] = {
    {"last_avail", (getter)Ring_get_last_avail, NULL, "Next avail ring slot to read.", NULL},
    {"used_idx", (getter)Ring_get_used_idx, NULL, "The used index last published.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vfsframe.virtio._split_ring.SplitRing",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A split virtqueue's rings in guest memory: see split_ring.PyRing.",
    .tp_new = Ring_new,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
};

/* -- serving: pop, let the session answer, push; one per queue thread ------------------- */

static PyObject *str_arm, *str_armed, *str_broken, *str_call_fd, *str_release;

typedef struct {
    PyObject_HEAD
    Ring *ring;
    PyObject *queue;      /* the VirtQueue: .broken and .call_fd are read for every chain */
    PyObject *handle;     /* handle(readable, writable) -> bytes written */
    PyObject *fallback;   /* fallback(chain, exception, length) -> bytes written: rare paths */
    PyObject *pop_failed; /* pop_failed(exception): the ring is corrupt, or popping failed */
    PyObject *wake_idle;  /* wake_idle(): a large chain is being served and others wait */
    PyObject *busy_since; /* list, per thread: when it started its chain (monotonic) or 0.0 */
    PyObject *idle;       /* list, per thread: whether it waits for a kick */
    PyObject *served;     /* list, per thread: chains served */
    PyObject *watch;      /* the StallWatch, or None */
    Py_ssize_t slot;
    Py_ssize_t parallel_bytes;
} Server;

static void Server_dealloc(Server *s)
{
    Py_XDECREF(s->ring);
    Py_XDECREF(s->queue);
    Py_XDECREF(s->handle);
    Py_XDECREF(s->fallback);
    Py_XDECREF(s->pop_failed);
    Py_XDECREF(s->wake_idle);
    Py_XDECREF(s->busy_since);
    Py_XDECREF(s->idle);
    Py_XDECREF(s->served);
    Py_XDECREF(s->watch);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyTypeObject RingType;

static PyObject *Server_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"ring",       "queue",      "handle",     "fallback",
                               "pop_failed", "wake_idle",  "busy_since", "idle",
                               "served",     "watch",      "slot",       "parallel_bytes",
                               NULL};
    PyObject *o[10];
    Py_ssize_t slot, parallel_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOOOO!O!O!Onn:ChainServer", keywords,
                                     &RingType, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                                     &PyList_Type, &o[6], &PyList_Type, &o[7], &PyList_Type,
                                     &o[8], &o[9], &slot, &parallel_bytes))
        return NULL;
    Server *s = (Server *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    PyObject **fields[] = {(PyObject **)&s->ring, &s->queue,      &s->handle, &s->fallback,
                           &s->pop_failed,        &s->wake_idle,  &s->busy_since,
                           &s->idle,              &s->served,     &s->watch};
    for (int i = 0; i < 10; i++)
        *fields[i] = Py_NewRef(o[i]);
    s->slot = slot;
    s->parallel_bytes = parallel_bytes;
    return (PyObject *)s;
}

/* A Python error in the bookkeeping must not keep a chain from the driver: report it, go on. */
static void report(PyObject *where)
{
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(where);
}

static PyObject *fetch_exception(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
}

static Py_ssize_t list_bytes(PyObject *views)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(views); i++)
        total += PyMemoryView_GET_BUFFER(PyList_GET_ITEM(views, i))->len;
    return total;
}

/* Views nobody else holds die with their list; one the session kept is released, so it can
 * no longer touch guest memory the driver now owns again (Chain.release). */
static void release_kept_views(PyObject *views)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(views); i++) {
        PyObject *view = PyList_GET_ITEM(views, i);
        if (Py_REFCNT(view) > 1) {
            PyObject *done = PyObject_CallMethodNoArgs(view, str_release);
            Py_XDECREF(done);
            report(view);
        }
    }
}

static void set_slot(PyObject *list, Py_ssize_t slot, PyObject *value)
{
    if (value == NULL || PyList_SetItem(list, slot, value) < 0)
        report(list);
}

static void mark_busy(Server *s)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* time.monotonic()'s clock */
    set_slot(s->busy_since, s->slot, PyFloat_FromDouble(now.tv_sec + now.tv_nsec * 1e-9));
    if (s->watch == Py_None)
        return;
    PyObject *armed = PyObject_GetAttr(s->watch, str_armed);
    int is_armed = armed ? PyObject_IsTrue(armed) : -1;
    Py_XDECREF(armed);
    if (is_armed == 0)
        Py_XDECREF(PyObject_CallMethodNoArgs(s->watch, str_arm));
    report(s->watch);
}

static void call_for_company(Server *s)
{
    int any_idle = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(s->idle) && !any_idle; i++)
        any_idle = PyList_GET_ITEM(s->idle, i) == Py_True;
    if (any_idle && avail_idx(s->ring) != s->ring->last_avail) {
        Py_XDECREF(PyObject_CallNoArgs(s->wake_idle));
        report(s->wake_idle);
    }
}

/* The session's answer for one chain: the bytes it wrote into the writable buffers. */
static uint32_t answer(Server *s, Popped *p, Py_ssize_t room)
{
    PyObject *exception = NULL, *result = NULL;
    if (!p->error[0]) {
        result = PyObject_CallFunctionObjArgs(s->handle, p->readable, p->writable, NULL);
        if (result == NULL) {
            exception = fetch_exception();
        } else if (PyLong_Check(result)) {
            long length = PyLong_AsLong(result);
            if (length >= 0 && length <= room) {
                Py_DECREF(result);
                return (uint32_t)length;
            }
            PyErr_Clear();
        }
    }
    /* A bad chain, a failed request, a length the session could not have written. */
    long length = 0;
    PyObject *chain = make_chain(p);
    if (chain != NULL) {
        PyObject *reply = PyObject_CallFunctionObjArgs(
            s->fallback, chain, exception ? exception : Py_None, result ? result : Py_None, NULL);
        if (reply != NULL)
            length = PyLong_AsLong(reply);
        Py_XDECREF(reply);
        Py_DECREF(chain);
    }
    report(s->fallback);
    Py_XDECREF(exception);
    Py_XDECREF(result);
    return length >= 0 && length <= room ? (uint32_t)length : 0;
}

static long call_fd(Server *s)
{
    PyObject *fd = PyObject_GetAttr(s->queue, str_call_fd);
    long value = fd != NULL && fd != Py_None ? PyLong_AsLong(fd) : -1;
    Py_XDECREF(fd);
    report(s->queue);
    return value;
}

static PyObject *Server_serve_one(Server *s, PyObject *Py_UNUSED(ignored))
{
    PyObject *broken = PyObject_GetAttr(s->queue, str_broken);
    int is_broken = broken ? PyObject_IsTrue(broken) : -1;
    Py_XDECREF(broken);
    if (is_broken)
        return is_broken < 0 ? NULL : Py_NewRef(Py_False);
    Ring *r = s->ring;
    Popped p;
    int popped = pop_chain(r, &p);
    if (popped == 0 && arm_kick(r))
        popped = pop_chain(r, &p); /* arrived while re-arming: no kick will announce it */
    if (popped < 0) {
        PyObject *exception = fetch_exception();
        PyObject *done = PyObject_CallOneArg(s->pop_failed, exception);
        Py_XDECREF(exception);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
    }
    if (popped <= 0)
        Py_RETURN_FALSE;
    Py_ssize_t room = list_bytes(p.writable);
    if (room + list_bytes(p.readable) >= s->parallel_bytes)
        call_for_company(s);
    mark_busy(s);
    uint32_t length = answer(s, &p, room);
    release_kept_views(p.readable);
    release_kept_views(p.writable);
    popped_clear(&p);
    push(r, p.head, length, call_fd(s));
    set_slot(s->busy_since, s->slot, PyFloat_FromDouble(0.0));
    PyObject *count = PyList_GetItem(s->served, s->slot);
    Py_ssize_t served = count ? PyLong_AsSsize_t(count) : -1;
    set_slot(s->served, s->slot, served >= 0 ? PyLong_FromSsize_t(served + 1) : NULL);
    Py_RETURN_TRUE;
}

static PyMethodDef Server_methods[] = {
    {"serve_one", (PyCFunction)Server_serve_one, METH_NOARGS,
     "Pop one chain and serve it; False if none was available (or the queue is broken)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vfsframe.virtio._split_ring.ChainServer",
    .tp_basicsize = sizeof(Server),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One queue thread's serving step in C: see dispatch.QueueService.",
    .tp_new = Server_new,
    .tp_dealloc = (destructor)Server_dealloc,
    .tp_methods = Server_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vfsframe.virtio._split_ring",
    .m_doc = "The split-virtqueue data path in C (see vfsframe/virtio/split_ring.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__split_ring(void)
{
    PyObject *descriptors = PyImport_ImportModule("vfsframe.virtio.descriptors");
    if (descriptors == NULL)
        return NULL;
    Chain = PyObject_GetAttrString(descriptors, "Chain");
    RingCorrupt = PyObject_GetAttrString(descriptors, "RingCorrupt");
    Py_DECREF(descriptors);
    if (Chain == NULL || RingCorrupt == NULL || PyType_Ready(&RingType) < 0 ||
        PyType_Ready(&ServerType) < 0)
        return NULL;
    str_arm = PyUnicode_InternFromString("arm");
    str_armed = PyUnicode_InternFromString("armed");
    str_broken = PyUnicode_InternFromString("broken");
    str_call_fd = PyUnicode_InternFromString("call_fd");
    str_release = PyUnicode_InternFromString("release");
    if (!str_arm || !str_armed || !str_broken || !str_call_fd || !str_release)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "SplitRing", (PyObject *)&RingType) < 0 ||
        PyModule_AddObjectRef(m, "ChainServer", (PyObject *)&ServerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
