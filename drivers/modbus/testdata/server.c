/*
 * A Modbus TCP server on libmodbus for the driver's tests and benchmarks: an
 * implementation independent of the Go ones.
 *
 *   server PORT [FAULT_PERIOD_S]
 *
 * listens on 127.0.0.1:PORT, prints "ready PORT" once it accepts connections, and
 * serves any number of clients until killed. The map (addresses 0..99 of each table):
 *   holding 0      a counter bumped on every request, so each poll sees fresh data
 *   holding 1      1234
 *   holding 2..3   float32 21.5, big-endian words
 *   holding 4      0xFFFF (-1 as int16)
 *   holding 5..9   500 + address
 *   input 0        tenths of a second since start
 *   input 1        42
 *   coil n         n % 3 == 0; coil 10 toggles every second
 *   discrete n     n % 2 == 0
 *   holding 20..22 a machine's vibration, as a vibration transmitter serves it:
 *                  RMS velocity in 0.01 mm/s, peak acceleration in 0.01 g, bearing
 *                  temperature in 0.1 C. Healthy (about 2 mm/s, 1.5 g, 55 C) for the
 *                  first two thirds of every FAULT_PERIOD_S seconds (default 30), a
 *                  bearing fault (about 6.5 mm/s, 7 g, 70 C) for the last third, with
 *                  a little noise; the plc demo and its test read them.
 *   coil 5         the machine's alarm lamp, written by edged's verdicts (any coil
 *                  is writable; 5 is the one the demo uses)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus/modbus.h>

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* vibration fills regs[0..2] for time t: healthy, then a bearing fault in the last
 * third of each period. The noise is a cheap deterministic wobble, not rand(), so
 * runs repeat. */
static void vibration(uint16_t *regs, double t, double period) {
	double phase = t / period - (long)(t / period);
	double wobble = 0.5 * (double)(((long)(t * 7919)) % 100) / 100.0 - 0.25;
	double rms = 2.0, peak = 1.5, temp = 55.0;
	if (phase >= 2.0 / 3.0) {
		rms = 6.5, peak = 7.0, temp = 70.0;
	}
	regs[0] = (uint16_t)((rms + wobble) * 100);
	regs[1] = (uint16_t)((peak + wobble) * 100);
	regs[2] = (uint16_t)((temp + 4 * wobble) * 10);
}

int main(int argc, char **argv) {
	if (argc != 2 && argc != 3) {
		fprintf(stderr, "usage: %s PORT [FAULT_PERIOD_S]\n", argv[0]);
		return 2;
	}
	double period = argc == 3 ? atof(argv[2]) : 30;
	if (!(period > 0)) {
		fprintf(stderr, "bad fault period %s\n", argv[2]);
		return 2;
	}
	int port = atoi(argv[1]);
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "bad port %s\n", argv[1]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);

	modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
	if (ctx == NULL) {
		fprintf(stderr, "modbus_new_tcp: %s\n", modbus_strerror(errno));
		return 1;
	}
	modbus_mapping_t *map = modbus_mapping_new(100, 100, 100, 100);
	if (map == NULL) {
		fprintf(stderr, "modbus_mapping_new: %s\n", modbus_strerror(errno));
		return 1;
	}
	for (int i = 0; i < 100; i++) {
		map->tab_bits[i] = (i % 3) == 0;
		map->tab_input_bits[i] = (i % 2) == 0;
	}
	map->tab_registers[1] = 1234;
	map->tab_registers[2] = 0x41AC; /* 21.5f */
	map->tab_registers[3] = 0x0000;
	map->tab_registers[4] = 0xFFFF;
	for (int i = 5; i < 10; i++) {
		map->tab_registers[i] = 500 + i;
	}
	map->tab_input_registers[1] = 42;

	int listener = modbus_tcp_listen(ctx, 16);
	if (listener < 0) {
		fprintf(stderr, "modbus_tcp_listen: %s\n", modbus_strerror(errno));
		return 1;
	}
	printf("ready %d\n", port);
	fflush(stdout);

	double start = now();
	fd_set all;
	FD_ZERO(&all);
	FD_SET(listener, &all);
	int maxfd = listener;
	uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
	for (;;) {
		fd_set ready = all;
		if (select(maxfd + 1, &ready, NULL, NULL, NULL) < 0) {
			if (errno == EINTR) {
				continue;
			}
			fprintf(stderr, "select: %s\n", strerror(errno));
			return 1;
		}
		for (int fd = 0; fd <= maxfd; fd++) {
			if (!FD_ISSET(fd, &ready)) {
				continue;
			}
			if (fd == listener) {
				int c = accept(listener, NULL, NULL);
				if (c < 0) {
					continue;
				}
				FD_SET(c, &all);
				if (c > maxfd) {
					maxfd = c;
				}
				continue;
			}
			modbus_set_socket(ctx, fd);
			int n = modbus_receive(ctx, query);
			if (n > 0) {
				double t = now() - start;
				map->tab_registers[0]++;
				map->tab_input_registers[0] = (uint16_t)(t * 10);
				map->tab_bits[10] = ((long)t) % 2;
				vibration(map->tab_registers + 20, t, period);
				modbus_reply(ctx, query, n, map);
			} else if (n < 0) {
				close(fd);
				FD_CLR(fd, &all);
			}
		}
	}
}
