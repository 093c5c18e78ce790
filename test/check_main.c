/*
 * check_main.c - the runner: every suite in one SRunner, non-zero exit on
 * any failure. Set CK_RUN_SUITE / CK_RUN_CASE to run a part.
 */
#include <stdlib.h>

#include "check_kvdist.h"

int main(void)
{
    SRunner *sr = srunner_create(vclock_suite());
    srunner_add_suite(sr, log_suite());
    srunner_add_suite(sr, object_suite());
    srunner_add_suite(sr, options_suite());
    srunner_add_suite(sr, store_suite());
    srunner_add_suite(sr, diskfault_suite());
    srunner_add_suite(sr, ring_suite());
    srunner_add_suite(sr, wire_suite());
    srunner_add_suite(sr, rpc_suite());
    srunner_add_suite(sr, cluster_suite());
    srunner_add_suite(sr, security_suite());
    srunner_add_suite(sr, failover_suite());
    srunner_add_suite(sr, availability_suite());
    srunner_add_suite(sr, aae_suite());
    srunner_add_suite(sr, resp_suite());
    srunner_add_suite(sr, http_suite());
    srunner_add_suite(sr, haproxy_suite());
    srunner_add_suite(sr, nemesis_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
