/*
 * ldapfeed: flags into a config, then the supervisor takes over.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>

#include "ldapfeed.h"

int
main(int argc, char *argv[])
{
	struct config	 cfg;
	char		 err[1024];
	sigset_t	 block, orig;
	int		 code, report = -1;

	if ((code = config_parse(&cfg, argc, argv, err, sizeof(err))) != 0) {
		if (code == CONFIG_DONE) {
			config_free(&cfg);
			return 0;
		}
		fprintf(stderr, "ldapfeed: %s\n", err);
		if (code == EX_USAGE)
			fprintf(stderr, "usage: ldapfeed -H URL -D DATADIR -m "
			    "MARKER -o ADDRESS -k KEYFILE [options] (try "
			    "--help)\n");
		config_free(&cfg);
		return code;
	}
	/*
	 * Hold the signals the supervisor handles until it can: a SIGTERM
	 * during startup then breaks the barrier instead of killing us.
	 */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGALRM);
	sigprocmask(SIG_BLOCK, &block, &orig);
	if (!cfg.foreground)
		report = daemon_detach(&orig);
	log_init(cfg.foreground, cfg.verbosity, "supervisor");
	code = supervisor_run(&cfg, report);
	config_free(&cfg);
	return code;
}
