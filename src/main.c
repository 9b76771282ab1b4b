/*
 * ldapfeed: flags into a config, then the supervisor takes over.
 */
#include <sys/mman.h>
#include <sys/resource.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "ldapfeed.h"

/*
 * Until the fork, the supervisor holds the key and the password (then each
 * process keeps only its own, see config_purge()): no core dumps (unless
 * LDAPFEED_CORE_DUMPS=1 asks for them), and the secrets' pages locked out
 * of swap where the limits allow.
 */
static void
protect_secrets(const struct config *cfg)
{
	const char	*env = getenv("LDAPFEED_CORE_DUMPS");
	struct rlimit	 none = { 0, 0 };

	if ((env == NULL || strcmp(env, "1") != 0) &&
	    setrlimit(RLIMIT_CORE, &none) == -1)
		log_warn("setrlimit RLIMIT_CORE");
	if (cfg->key.data)
		(void)mlock(cfg->key.data, cfg->key.cap);
	if (cfg->password.data)
		(void)mlock(cfg->password.data, cfg->password.cap);
}

/* Was --check asked for, even on a command line that does not parse? */
static int
check_asked(int argc, char *argv[])
{
	int	 i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--check") == 0)
			return 1;
	return 0;
}

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
		if (check_asked(argc, argv)) {
			printf("%-5s %s\n", "FAIL", err);
			config_free(&cfg);
			return code;
		}
		fprintf(stderr, "ldapfeed: %s\n", err);
		if (code == EX_USAGE)
			fprintf(stderr, "usage: ldapfeed -H URL -D DATADIR -m "
			    "MARKER -o ADDRESS -k KEYFILE [options] (try "
			    "--help)\n");
		config_free(&cfg);
		return code;
	}
	if (cfg.check) {
		log_init(1, cfg.verbosity, "check");
		code = check_run(&cfg);
		config_free(&cfg);
		return code;
	}
	/*
	 * Hold the signals the supervisor handles until it can: a SIGTERM
	 * during startup then breaks the barrier instead of killing us.
	 */
	signals_handled(&block);
	sigprocmask(SIG_BLOCK, &block, &orig);
	if (!cfg.foreground)
		report = daemon_detach(&orig);
	log_init(cfg.foreground, cfg.verbosity, "supervisor");
	protect_secrets(&cfg);
	code = supervisor_run(&cfg, report);
	config_free(&cfg);
	return code;
}
