/*
 * Running as a daemon: detaching from the terminal so that the launching
 * process still learns whether startup worked, and the pidfile.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

/*
 * Double fork and a new session.  The launcher stays behind, reading a
 * status pipe: it exits only when the daemon reports "CODE message" after
 * startup, with that code (0 once running) and the message on stderr.
 * Returns the pipe's write end in the daemon.
 */
int
daemon_detach(const sigset_t *launcher_mask)
{
	char	 line[1024];
	ssize_t	 n;
	size_t	 len = 0;
	pid_t	 pid;
	int	 p[2], fd, code, st;

	if (pipe2(p, O_CLOEXEC) == -1)
		fatal(EX_OSERR, "pipe");
	fflush(NULL);
	if ((pid = fork()) == -1)
		fatal(EX_OSERR, "fork");
	if (pid > 0) {
		/* The launcher: Ctrl-C or a kill still ends it. */
		sigprocmask(SIG_SETMASK, launcher_mask, NULL);
		close(p[1]);
		waitpid(pid, &st, 0);	/* the middle process exits at once */
		while (len < sizeof(line) - 1 && (n = read(p[0], line + len,
		    sizeof(line) - 1 - len)) != 0) {
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1)
				break;
			len += (size_t)n;
		}
		line[len] = '\0';
		if (len == 0 || sscanf(line, "%d", &code) != 1) {
			fprintf(stderr, "ldapfeed: the daemon died during "
			    "startup\n");
			exit(EX_SOFTWARE);
		}
		if (code != 0 && strchr(line, ' '))
			fprintf(stderr, "ldapfeed: %s", strchr(line, ' ') + 1);
		exit(code);
	}
	close(p[0]);
	if (setsid() == -1)
		fatal(EX_OSERR, "setsid");
	if ((pid = fork()) == -1)
		fatal(EX_OSERR, "fork");
	if (pid > 0)
		_exit(0);
	if (chdir("/") == -1)
		fatal(EX_OSERR, "chdir /");
	if ((fd = open("/dev/null", O_RDWR)) == -1)
		fatal(EX_OSERR, "/dev/null");
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
	return p[1];
}

/* Tell the launcher how startup went, once; -1 means nobody is waiting. */
void
daemon_report(int *fd, int code, const char *msg)
{
	char	 line[1024];
	int	 n;

	if (*fd == -1)
		return;
	n = snprintf(line, sizeof(line), "%d %s\n", code, msg ? msg : "");
	if (n > (int)sizeof(line) - 1)
		n = sizeof(line) - 1;
	(void)write(*fd, line, (size_t)n);
	close(*fd);
	*fd = -1;
}

/*
 * Take the pidfile: locked for the daemon's life, so a second instance is
 * refused while the first lives.  The pid is written later, once startup
 * has succeeded.
 */
int
pidfile_lock(const char *path, char *err, size_t errlen)
{
	char	 buf[32];
	ssize_t	 n;
	int	 fd;

	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) == -1) {
		snprintf(err, errlen, "--pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		n = read(fd, buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		snprintf(err, errlen, "--pidfile %s is held by a running "
		    "ldapfeed%s%s", path, *buf ? ", pid " : "", buf);
		close(fd);
		return -1;
	}
	return fd;
}

int
pidfile_write(int fd, pid_t pid)
{
	char	 buf[32];
	int	 n;

	n = snprintf(buf, sizeof(buf), "%ld\n", (long)pid);
	if (ftruncate(fd, 0) == -1 || pwrite(fd, buf, (size_t)n, 0) != n)
		return -1;
	return 0;
}

void
pidfile_remove(int fd, const char *path)
{
	if (fd == -1)
		return;
	unlink(path);
	close(fd);
}
