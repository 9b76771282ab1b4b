/*
 * ldapfeed-nats-tail: read ldapfeed's events from a JetStream stream and
 * print each as one line of JSON (ldapfeed-nats-tail.1), with a durable
 * consumer when named, so that a restart resumes where it stopped.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>

#include <nats/nats.h>
#include <openssl/evp.h>

#define FETCH_BATCH	256
#define FETCH_WAIT_MS	500

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void
usage(void)
{
	fprintf(stderr, "usage: ldapfeed-nats-tail [-s URL[,URL...]] "
	    "[-k CREDFILE] [-C CAFILE] [-S STREAM]\n"
	    "                          [-p PREFIX] [-d DURABLE] [-t TYPE] "
	    "[-n COUNT] [-i IDLESECS]\n");
	exit(EX_USAGE);
}

static char *
read_token(const char *path)
{
	char	 line[4096];
	FILE	*fp;
	size_t	 n;

	if ((fp = fopen(path, "r")) == NULL) {
		perror(path);
		exit(EX_NOINPUT);
	}
	if (fgets(line, sizeof(line), fp) == NULL)
		line[0] = '\0';
	fclose(fp);
	n = strcspn(line, "\r\n");
	line[n] = '\0';
	return strdup(line);
}

/*
 * -k names a .creds file when it holds a "BEGIN NATS USER JWT" block (libnats
 * reads the JWT and the NKey seed from it at every connect), else a token:
 * told apart as ldapfeed.8 says for its own -k.
 */
static int
is_creds(const char *path)
{
	char	 line[4096];
	FILE	*fp;
	int	 found = 0;

	if ((fp = fopen(path, "r")) == NULL) {
		perror(path);
		exit(EX_NOINPUT);
	}
	while (!found && fgets(line, sizeof(line), fp) != NULL)
		found = strstr(line, "BEGIN NATS USER JWT") != NULL;
	fclose(fp);
	return found;
}

/* A header's value, JSON-escaped well enough for ids, types and numbers. */
static void
put_header(natsMsg *msg, const char *key, const char *name)
{
	const char	*v = NULL;
	const char	*p;

	if (natsMsgHeader_Get(msg, name, &v) != NATS_OK || v == NULL)
		return;
	printf(",\"%s\":\"", key);
	for (p = v; *p; p++)
		if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
			putchar(*p);
	putchar('"');
}

static void
print_msg(natsMsg *msg)
{
	jsMsgMetaData	*meta = NULL;
	const char	*data = natsMsg_GetData(msg);
	int		 len = natsMsg_GetDataLength(msg);
	unsigned char	*b64;

	printf("{\"stream_seq\":");
	if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
		printf("%" PRIu64, meta->Sequence.Stream);
		jsMsgMetaData_Destroy(meta);
	} else
		printf("0");
	printf(",\"subject\":\"%s\"", natsMsg_GetSubject(msg));
	put_header(msg, "msg_id", "Nats-Msg-Id");
	put_header(msg, "type", "Ldapfeed-Type");
	put_header(msg, "seq", "Ldapfeed-Seq");
	put_header(msg, "uuid", "Ldapfeed-Uuid");
	/* JSON payloads as they are; a pickle as base64. */
	if (len > 0 && data[0] == '{') {
		printf(",\"event\":");
		fwrite(data, 1, (size_t)len, stdout);
	} else {
		b64 = malloc(4 * ((size_t)len / 3 + 1) + 1);
		if (b64 == NULL)
			exit(EX_OSERR);
		EVP_EncodeBlock(b64, (const unsigned char *)data, len);
		printf(",\"pickle\":\"%s\"", b64);
		free(b64);
	}
	printf("}\n");
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "server",	required_argument, NULL, 's' },
		{ "token",	required_argument, NULL, 'k' },
		{ "ca",		required_argument, NULL, 'C' },
		{ "stream",	required_argument, NULL, 'S' },
		{ "prefix",	required_argument, NULL, 'p' },
		{ "durable",	required_argument, NULL, 'd' },
		{ "type",	required_argument, NULL, 't' },
		{ "count",	required_argument, NULL, 'n' },
		{ "idle",	required_argument, NULL, 'i' },
		{ NULL,		0,		   NULL, 0 }
	};
	const char		*servers = "nats://127.0.0.1:4222";
	const char		*stream = "LDAPFEED", *prefix = "ldapfeed";
	const char		*durable = NULL, *type = NULL;
	const char		*cred = NULL, *ca = NULL;
	const char		*urls[16];
	char			*token = NULL, *list, *tok, subject[512];
	natsOptions		*opts = NULL;
	natsConnection		*nc = NULL;
	jsCtx			*js = NULL;
	natsSubscription	*sub = NULL;
	natsMsgList		 batch;
	jsSubOptions		 so;
	jsErrCode		 jerr = 0;
	natsStatus		 s;
	long			 count = -1, idle = -1, got = 0;
	time_t			 last;
	int			 ch, nurls = 0, i, tls = 0;

	while ((ch = getopt_long(argc, argv, "s:k:C:S:p:d:t:n:i:", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 's': servers = optarg; break;
		case 'k': cred = optarg; break;
		case 'C': ca = optarg; break;
		case 'S': stream = optarg; break;
		case 'p': prefix = optarg; break;
		case 'd': durable = optarg; break;
		case 't': type = optarg; break;
		case 'n': count = atol(optarg); break;
		case 'i': idle = atol(optarg); break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	list = strdup(servers);
	for (tok = strtok(list, ","); tok && nurls < 16; tok = strtok(NULL, ",")) {
		urls[nurls++] = tok;
		tls |= strncasecmp(tok, "tls://", 6) == 0;
	}
	if (cred && !is_creds(cred))
		token = read_token(cred);
	snprintf(subject, sizeof(subject), "%s.%s", prefix, type ? type : ">");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(opts, urls, nurls);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK && token)
		s = natsOptions_SetToken(opts, token);
	else if (s == NATS_OK && cred)
		s = natsOptions_SetUserCredentialsFromFiles(opts, cred, NULL);
	if (s == NATS_OK && (tls || ca))
		s = natsOptions_SetSecure(opts, true);
	if (s == NATS_OK && ca)
		s = natsOptions_LoadCATrustedCertificates(opts, ca);
	if (s == NATS_OK)
		s = natsConnection_Connect(&nc, opts);
	if (s != NATS_OK) {
		fprintf(stderr, "ldapfeed-nats-tail: %s: %s\n", servers,
		    natsStatus_GetText(s));
		return s == NATS_CONNECTION_AUTH_FAILED ? EX_NOPERM :
		    EX_UNAVAILABLE;
	}
	if ((s = natsConnection_JetStream(&js, nc, NULL)) == NATS_OK) {
		jsSubOptions_Init(&so);
		so.Stream = stream;
		so.Config.AckPolicy = js_AckExplicit;
		so.Config.DeliverPolicy = js_DeliverAll;
		s = js_PullSubscribe(&sub, js, subject, durable, NULL, &so,
		    &jerr);
	}
	if (s != NATS_OK) {
		fprintf(stderr, "ldapfeed-nats-tail: stream %s, %s: %s (%d)\n",
		    stream, subject, natsStatus_GetText(s), (int)jerr);
		return EX_CONFIG;
	}
	last = time(NULL);
	while (!stop && (count < 0 || got < count)) {
		s = natsSubscription_Fetch(&batch, sub, count < 0 ||
		    count - got > FETCH_BATCH ? FETCH_BATCH : (int)(count - got),
		    FETCH_WAIT_MS, &jerr);
		if (s == NATS_OK) {
			for (i = 0; i < batch.Count; i++) {
				print_msg(batch.Msgs[i]);
				/* Acked once printed: a restart resumes after it. */
				natsMsg_Ack(batch.Msgs[i], NULL);
				got++;
			}
			fflush(stdout);
			natsMsgList_Destroy(&batch);
			last = time(NULL);
		} else if (s != NATS_TIMEOUT && s != NATS_CONNECTION_DISCONNECTED)
			nats_Sleep(100);
		if (idle >= 0 && time(NULL) - last >= idle)
			break;
	}
	/* Unsubscribing would delete a durable consumer: only drop ours. */
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	natsOptions_Destroy(opts);
	free(token);
	free(list);
	nats_Close();
	return 0;
}
